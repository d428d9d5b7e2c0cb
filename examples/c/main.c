/* A minimal application around a model compiled by qcc.
 *
 * Build (MODEL is the --name given to `qcc compile`, DIR its -o directory):
 *   gcc -O2 -DMODEL=resnet18 -include DIR/resnet18.h main.c DIR/resnet18.o -o app
 * Run:
 *   ./app input0.npy [input1.npy ...] output0.npy [output1.npy ...]
 *
 * Reads each input from a .npy file (C order, the model's shape and element type: float32,
 * or uint8 for the quantized inputs of a model compiled with --io int8), runs the model
 * once and writes each output as a .npy file of its type. Exit status 0 on success. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MODEL
#error "compile with -DMODEL=<name> -include <dir>/<name>.h"
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define M(suffix) CAT(MODEL, suffix)

static int fail(const char *what, const char *path) {
    fprintf(stderr, "app: %s: %s\n", path, what);
    return 0;
}

/* The .npy type string of a qcc element type name ("f32", "u8"). */
static const char *npy_descr(const char *dtype) {
    return strcmp(dtype, "u8") == 0 ? "|u1" : "<f4";
}

/* Reads a C-order .npy of type `descr` whose shape is `dims[rank]` into `data` (`bytes`
 * long). */
static int read_npy(const char *path, void *data, size_t bytes, int rank, const size_t *dims,
                    const char *descr) {
    FILE *f = fopen(path, "rb");
    if (!f) return fail("cannot open", path);
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        fclose(f);
        return fail("not a .npy file", path);
    }
    size_t header_len;
    if (magic[6] == 1) {
        header_len = magic[8] | (magic[9] << 8);
    } else {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) { fclose(f); return fail("truncated header", path); }
        header_len = magic[8] | (magic[9] << 8) | (more[0] << 16) | ((size_t)more[1] << 24);
    }
    char *header = calloc(header_len + 1, 1);
    if (!header || fread(header, 1, header_len, f) != header_len) {
        free(header);
        fclose(f);
        return fail("truncated header", path);
    }
    char want_descr[32];
    snprintf(want_descr, sizeof want_descr, "'descr': '%s'", descr);
    int ok = strstr(header, want_descr) && strstr(header, "'fortran_order': False");
    /* The shape, e.g. "(1, 3, 224, 224)", must equal the model's. */
    char expected[256];
    int len = snprintf(expected, sizeof expected, "'shape': (");
    for (int i = 0; i < rank; i++)
        len += snprintf(expected + len, sizeof expected - len, i + 1 < rank || rank > 1 ? "%zu, " : "%zu,", dims[i]);
    if (rank > 1) len -= 2;
    snprintf(expected + len, sizeof expected - len, ")");
    ok = ok && strstr(header, expected);
    free(header);
    if (!ok) {
        fclose(f);
        fprintf(stderr, "app: %s: expected a C-order array of '%s' with %s\n", path, descr, expected);
        return 0;
    }
    size_t got = fread(data, 1, bytes, f);
    fclose(f);
    if (got != bytes) return fail("fewer elements than the shape says", path);
    return 1;
}

/* Writes `data` as a .npy (format 1.0) of type `descr` and shape `dims[rank]`. */
static int write_npy(const char *path, const void *data, size_t bytes, int rank, const size_t *dims,
                     const char *descr) {
    char header[256];
    int len = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < rank; i++)
        len += snprintf(header + len, sizeof header - len, "%zu,%s", dims[i], i + 1 < rank ? " " : "");
    if (rank > 1) len -= 1; /* "(1, 3)" not "(1, 3,)"; a 1-D shape keeps its comma */
    len += snprintf(header + len, sizeof header - len, "), }");
    /* Pad with spaces so the data starts at a multiple of 64, then a newline. */
    size_t total = 10 + len + 1;
    size_t padded = (total + 63) / 64 * 64;
    FILE *f = fopen(path, "wb");
    if (!f) return fail("cannot create", path);
    unsigned short header_len = (unsigned short)(padded - 10);
    unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                  (unsigned char)(header_len & 0xff), (unsigned char)(header_len >> 8)};
    fwrite(preamble, 1, 10, f);
    fwrite(header, 1, len, f);
    for (size_t i = total; i < padded; i++) fputc(' ', f);
    fputc('\n', f);
    int ok = fwrite(data, 1, bytes, f) == bytes;
    ok = (fclose(f) == 0) && ok;
    return ok ? 1 : fail("write failed", path);
}

int main(int argc, char **argv) {
    enum { NI = M(_NUM_INPUTS), NO = M(_NUM_OUTPUTS) };
    if (argc != 1 + NI + NO) {
        fprintf(stderr, "usage: %s %d input .npy file(s) then %d output .npy file(s)\n", argv[0], NI, NO);
        return 2;
    }
    const void *inputs[NI > 0 ? NI : 1];
    void *outputs[NO > 0 ? NO : 1];
    for (int i = 0; i < NI; i++) {
        void *buffer = malloc(M(_input_sizes)[i] ? M(_input_sizes)[i] : 1);
        if (!buffer || !read_npy(argv[1 + i], buffer, M(_input_sizes)[i], M(_input_ranks)[i], M(_input_shapes)[i],
                                 npy_descr(M(_input_dtypes)[i])))
            return 1;
        inputs[i] = buffer;
    }
    for (int i = 0; i < NO; i++) {
        outputs[i] = malloc(M(_output_sizes)[i] ? M(_output_sizes)[i] : 1);
        if (!outputs[i]) return 1;
    }
    /* The workspace must be 64-byte aligned; aligned_alloc wants a multiple of 64. */
    size_t workspace_bytes = (M(_workspace_size)() + 63) / 64 * 64;
    void *workspace = aligned_alloc(64, workspace_bytes ? workspace_bytes : 64);
    if (!workspace) return 1;
    int status = M(_run)(inputs, outputs, workspace);
    if (status != 0) {
        fprintf(stderr, "app: the model returned %d\n", status);
        return 1;
    }
    for (int i = 0; i < NO; i++)
        if (!write_npy(argv[1 + NI + i], outputs[i], M(_output_sizes)[i], M(_output_ranks)[i], M(_output_shapes)[i],
                       npy_descr(M(_output_dtypes)[i])))
            return 1;
    free(workspace);
    for (int i = 0; i < NI; i++) free((void *)inputs[i]);
    for (int i = 0; i < NO; i++) free(outputs[i]);
    return 0;
}
