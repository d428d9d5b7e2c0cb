//! `qcc bench`: latency percentiles and throughput of a compiled model, run in process.
//!
//! With `threads = K`, K threads each run the model on their own workspace and output
//! buffers, back to back, sharing the code and weights (the generated code is reentrant);
//! every run's latency goes into one distribution and throughput counts samples (runs ×
//! batch) over the wall time of the measured phase.

use std::time::{Duration, Instant};

use crate::compile::JitModel;
use crate::driver::DriverError;
use qcc_codegen::model::AlignedBuffer;

/// When to stop measuring.
#[derive(Clone, Copy, Debug)]
pub enum StopAfter {
    /// Runs per thread.
    Iterations(usize),
    /// Wall time of the measured phase.
    Seconds(f64),
}

#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub threads: usize,
    pub stop: StopAfter,
    /// Unmeasured runs per thread first (page faults, caches, frequency).
    pub warmup: usize,
    /// Samples per run (the model's batch), for throughput.
    pub batch: usize,
}

#[derive(Clone, Debug)]
pub struct BenchResult {
    /// Every measured run's latency, sorted.
    pub latencies: Vec<Duration>,
    pub wall: Duration,
    pub threads: usize,
    pub batch: usize,
}

impl BenchResult {
    /// The `p`-th percentile (nearest rank), `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// Samples per second over the measured phase.
    pub fn throughput(&self) -> f64 {
        (self.latencies.len() * self.batch) as f64 / self.wall.as_secs_f64().max(1e-12)
    }

    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "runs: {} ({} thread(s), batch {})\nlatency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  min {:.3}  max {:.3}\nthroughput: {:.1} samples/s",
            self.latencies.len(),
            self.threads,
            self.batch,
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies.first().copied().unwrap_or_default()),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.throughput()
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        serde_json::json!({
            "runs": self.latencies.len(),
            "threads": self.threads,
            "batch": self.batch,
            "p50_ms": ms(self.percentile(50.0)),
            "p90_ms": ms(self.percentile(90.0)),
            "p99_ms": ms(self.percentile(99.0)),
            "min_ms": ms(self.latencies.first().copied().unwrap_or_default()),
            "throughput_per_s": self.throughput(),
        })
    }
}

/// Runs `model` on `inputs` as `options` say.
pub fn bench(
    model: &JitModel,
    inputs: &[AlignedBuffer],
    options: &BenchOptions,
) -> Result<BenchResult, DriverError> {
    if options.threads == 0 {
        return Err(DriverError::Other("--threads must be at least 1".into()));
    }
    // Each thread times its own measured phase: the main thread can be descheduled past the
    // start gate, and on short runs the workers finish before it reads the clock.
    type Phase = (Vec<Duration>, Instant, Instant);
    let one_thread = |start_gate: &std::sync::Barrier| -> Result<Phase, DriverError> {
        let mut outputs = model.output_buffers();
        let mut workspace = model.workspace();
        for _ in 0..options.warmup {
            model.run_buffers(inputs, &mut outputs, &mut workspace)?;
        }
        start_gate.wait();
        let begin = Instant::now();
        let mut latencies = Vec::new();
        loop {
            let done = match options.stop {
                StopAfter::Iterations(n) => latencies.len() >= n,
                StopAfter::Seconds(s) => {
                    begin.elapsed().as_secs_f64() >= s && !latencies.is_empty()
                }
            };
            if done {
                return Ok((latencies, begin, Instant::now()));
            }
            let t = Instant::now();
            model.run_buffers(inputs, &mut outputs, &mut workspace)?;
            latencies.push(t.elapsed());
        }
    };
    let gate = std::sync::Barrier::new(options.threads + 1);
    let per_thread = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.threads)
            .map(|_| scope.spawn(|| one_thread(&gate)))
            .collect();
        gate.wait();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| DriverError::Other("a benchmark thread panicked".into()))
            })
            .collect();
        results
    });
    let mut latencies = Vec::new();
    let mut span: Option<(Instant, Instant)> = None;
    for result in per_thread {
        let (times, begin, end) = result??;
        latencies.extend(times);
        span = Some(match span {
            Some((b, e)) => (b.min(begin), e.max(end)),
            None => (begin, end),
        });
    }
    // The measured phase: from the first thread's start to the last thread's end.
    let wall = span.map_or(Duration::ZERO, |(b, e)| e.duration_since(b));
    latencies.sort();
    Ok(BenchResult {
        latencies,
        wall,
        threads: options.threads,
        batch: options.batch,
    })
}

/// The median time of one layer run alone.
#[derive(Clone, Debug)]
pub struct LayerTime {
    pub index: usize,
    pub node: String,
    pub op: String,
    pub kernel: String,
    pub macs: usize,
    pub median: Duration,
}

impl LayerTime {
    /// 2·MACs per second, in GFLOP/s.
    pub fn gflops(&self) -> f64 {
        2.0 * self.macs as f64 / self.median.as_secs_f64().max(1e-12) / 1e9
    }
}

/// Times every layer alone (`repeats` runs each, after one full warm-up run), in execution
/// order. Each layer reads what the previous layers of the warm-up run left in the
/// workspace, so it sees real data. `model` must come from [`JitModel::with_layer_entries`].
pub fn profile_layers(
    model: &JitModel,
    layers: &[qcc_codegen::model::LayerChoice],
    inputs: &[AlignedBuffer],
    repeats: usize,
) -> Result<Vec<LayerTime>, DriverError> {
    let steps = model.program.step_count();
    if steps < layers.len() {
        return Err(DriverError::Other(
            "the model was not compiled with one entry per layer".into(),
        ));
    }
    let mut outputs = model.output_buffers();
    let mut workspace = model.workspace();
    model.run_buffers(inputs, &mut outputs, &mut workspace)?;
    let input_refs: Vec<&AlignedBuffer> = inputs.iter().collect();
    let mut times = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let mut samples = Vec::with_capacity(repeats.max(1));
        for _ in 0..repeats.max(1) {
            let mut output_refs: Vec<&mut AlignedBuffer> = outputs.iter_mut().collect();
            let t = Instant::now();
            model
                .program
                .run_step(index, &input_refs, &mut output_refs, &mut workspace)
                .map_err(|e| DriverError::Other(e.to_string()))?;
            samples.push(t.elapsed());
        }
        samples.sort();
        times.push(LayerTime {
            index,
            node: layer.node.clone(),
            op: layer.op.clone(),
            kernel: layer.kernel.clone(),
            macs: layer.macs,
            median: samples[samples.len() / 2],
        });
    }
    Ok(times)
}

/// The `top` slowest layers as a table, with their share of the summed layer time.
pub fn format_layer_profile(times: &[LayerTime], top: usize) -> String {
    use std::fmt::Write as _;
    let total: f64 = times.iter().map(|t| t.median.as_secs_f64()).sum();
    let mut sorted: Vec<&LayerTime> = times.iter().collect();
    sorted.sort_by_key(|t| std::cmp::Reverse(t.median));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "layers: {} (sum of medians {:.3} ms); the {} slowest:",
        times.len(),
        total * 1e3,
        top.min(times.len())
    );
    let _ = writeln!(
        out,
        "  {:>4}  {:<28} {:<18} {:>9} {:>6} {:>9} {:>8}  kernel",
        "#", "node", "op", "ms", "share", "MMAC", "GFLOP/s"
    );
    for t in sorted.iter().take(top) {
        let _ = writeln!(
            out,
            "  {:>4}  {:<28} {:<18} {:>9.3} {:>5.1}% {:>9.1} {:>8.1}  {}",
            t.index,
            t.node,
            t.op,
            t.median.as_secs_f64() * 1e3,
            100.0 * t.median.as_secs_f64() / total.max(1e-12),
            t.macs as f64 / 1e6,
            t.gflops(),
            t.kernel
        );
    }
    out
}

/// The profile as JSON (every layer, in execution order).
pub fn layer_profile_json(times: &[LayerTime]) -> serde_json::Value {
    serde_json::Value::Array(
        times
            .iter()
            .map(|t| {
                serde_json::json!({
                    "index": t.index,
                    "node": t.node,
                    "op": t.op,
                    "kernel": t.kernel,
                    "macs": t.macs,
                    "median_ms": t.median.as_secs_f64() * 1e3,
                    "gflops": t.gflops(),
                })
            })
            .collect(),
    )
}
