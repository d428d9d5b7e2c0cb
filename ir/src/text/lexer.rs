//! Tokens of the `.qir` text: a hand-written lexer that records where each token starts.

use super::ParseError;

/// A position in the source, both 1-based; columns count characters, not bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// `%name` or `%"quoted name"`: a value.
    Value(String),
    /// `@name` or `@"quoted name"`: a node name.
    NodeName(String),
    /// A word: op names, dtypes, keywords, attribute keys, symbolic dims.
    Word(String),
    /// A number as written (sign included); `inf` and `NaN` are numbers too.
    Number(String),
    /// A `"quoted string"`, escapes resolved.
    Str(String),
    Punct(char),
    Arrow,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Value(v) => format!("value %{}", super::quote_name(v)),
            Tok::NodeName(n) => format!("node name @{}", super::quote_name(n)),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Number(n) => format!("number {n}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Arrow => "'->'".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// Words that are numbers: they may stand wherever a float may.
pub fn is_number_word(w: &str) -> bool {
    matches!(w, "inf" | "NaN" | "nan")
}

pub fn is_bare_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Pos,
}

impl Lexer<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.col = 1;
        } else {
            self.pos.col += 1;
        }
        Some(c)
    }

    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|&c| pred(c)) {
            s.push(c);
            self.bump();
        }
        s
    }

    fn skip_space_and_comments(&mut self) {
        while let Some(c) = self.peek() {
            if c == ';' {
                self.take_while(|c| c != '\n');
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    /// A quoted string; the opening quote is the next character.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.bump();
        let mut s = String::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None | Some('\n') => return Err(ParseError::at(start, "unterminated string")),
                Some('"') => return Ok(s),
                Some('\\') => s.push(self.escape(here)?),
                Some(c) => s.push(c),
            }
        }
    }

    fn escape(&mut self, at: Pos) -> Result<char, ParseError> {
        let bad = || {
            ParseError::at(
                at,
                "invalid escape (expected \\\\, \\\", \\n, \\t, \\r or \\u{hex})",
            )
        };
        match self.bump() {
            Some('\\') => Ok('\\'),
            Some('"') => Ok('"'),
            Some('n') => Ok('\n'),
            Some('t') => Ok('\t'),
            Some('r') => Ok('\r'),
            Some('u') => {
                if self.bump() != Some('{') {
                    return Err(bad());
                }
                let hex = self.take_while(|c| c.is_ascii_hexdigit());
                if self.bump() != Some('}') {
                    return Err(bad());
                }
                u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    /// The name after a `%` or `@` sigil: bare characters or a quoted string.
    fn sigil_name(&mut self, sigil: char, start: Pos) -> Result<String, ParseError> {
        self.bump();
        match self.peek() {
            Some('"') => self.string(),
            Some(c) if is_bare_name_char(c) => Ok(self.take_while(is_bare_name_char)),
            _ => Err(ParseError::at(
                start,
                format!("expected a name or a quoted string after '{sigil}'"),
            )),
        }
    }

    /// Digits with an optional fraction and exponent, or the words `inf` / `NaN` after a sign.
    fn number(&mut self, start: Pos) -> Result<String, ParseError> {
        let mut s = String::new();
        if let Some(sign) = self.peek().filter(|&c| c == '-' || c == '+') {
            s.push(sign);
            self.bump();
        }
        if self.peek().is_some_and(is_word_start) {
            let w = self.take_while(|c| c.is_ascii_alphanumeric());
            if !is_number_word(&w) {
                return Err(ParseError::at(
                    start,
                    format!("expected a number after '{s}', found '{w}'"),
                ));
            }
            return Ok(s + &w);
        }
        let digits = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() {
            return Err(ParseError::at(
                start,
                format!("expected a number after '{s}'"),
            ));
        }
        s += &digits;
        if self.peek() == Some('.') {
            self.bump();
            s.push('.');
            s += &self.take_while(|c| c.is_ascii_digit());
        }
        if let Some(e) = self.peek().filter(|&c| c == 'e' || c == 'E') {
            self.bump();
            s.push(e);
            if let Some(sign) = self.peek().filter(|&c| c == '-' || c == '+') {
                self.bump();
                s.push(sign);
            }
            let exp = self.take_while(|c| c.is_ascii_digit());
            if exp.is_empty() {
                return Err(ParseError::at(
                    start,
                    format!("number '{s}' has an empty exponent"),
                ));
            }
            s += &exp;
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let rest = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            return Err(ParseError::at(
                start,
                format!("malformed number '{s}{rest}'"),
            ));
        }
        Ok(s)
    }

    fn next_token(&mut self) -> Result<(Tok, Pos), ParseError> {
        self.skip_space_and_comments();
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok((Tok::Eof, start));
        };
        let tok = match c {
            '%' => Tok::Value(self.sigil_name('%', start)?),
            '@' => Tok::NodeName(self.sigil_name('@', start)?),
            '"' => Tok::Str(self.string()?),
            '-' => {
                self.bump();
                if self.peek() == Some('>') {
                    self.bump();
                    Tok::Arrow
                } else {
                    Tok::Number(format!("-{}", self.number(start)?))
                }
            }
            '+' => Tok::Number(self.number(start)?),
            c if c.is_ascii_digit() => Tok::Number(self.number(start)?),
            c if is_word_start(c) => {
                let w = self.take_while(is_bare_name_char);
                if is_number_word(&w) {
                    Tok::Number(w)
                } else {
                    Tok::Word(w)
                }
            }
            '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | ',' | '=' | ':' => {
                self.bump();
                Tok::Punct(c)
            }
            other => {
                return Err(ParseError::at(
                    start,
                    format!("unexpected character {other:?}"),
                ))
            }
        };
        Ok((tok, start))
    }
}

/// Splits the source into tokens, ending with [`Tok::Eof`].
pub fn tokenize(src: &str) -> Result<Vec<(Tok, Pos)>, ParseError> {
    let mut lexer = Lexer {
        chars: src.chars().peekable(),
        pos: Pos { line: 1, col: 1 },
    };
    let mut out = Vec::new();
    loop {
        let (tok, pos) = lexer.next_token()?;
        let end = tok == Tok::Eof;
        out.push((tok, pos));
        if end {
            return Ok(out);
        }
    }
}
