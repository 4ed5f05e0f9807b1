/* Helpers shared by the libFuzzer targets: NUL-terminated copies of the
 * input (the parsers under test take both (body, len) and C strings) and a
 * splitter for inputs made of several sections. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A check of a property the code promises (not a crash the sanitizers see):
 * aborts, so libFuzzer saves the input. */
#define FUZZ_CHECK(cond)                                                                        \
        do {                                                                                    \
                if (!(cond)) {                                                                  \
                        fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
                        abort();                                                                \
                }                                                                               \
        } while (0)

/* malloc'ed copy with a NUL after len bytes; NULL only when out of memory. */
static inline char *fuzz_strndup(const uint8_t *data, size_t len) {
        char *s = malloc(len + 1);
        if (s) {
                memcpy(s, data, len);
                s[len] = 0;
        }
        return s;
}

/* Splits [data, data+len) at each occurrence of sep into at most max parts
 * (the last part takes the rest). Returns the number of parts (>= 1). */
struct fuzz_part { const uint8_t *p; size_t n; };
static inline size_t fuzz_split(const uint8_t *data, size_t len, const char *sep, struct fuzz_part *parts, size_t max) {
        size_t sl = strlen(sep), n = 0;
        const uint8_t *p = data, *end = data + len;
        while (n + 1 < max) {
                const uint8_t *hit = len && sl <= (size_t) (end - p) ? memmem(p, (size_t) (end - p), sep, sl) : NULL;
                if (!hit)
                        break;
                parts[n++] = (struct fuzz_part) { p, (size_t) (hit - p) };
                p = hit + sl;
        }
        parts[n++] = (struct fuzz_part) { p, (size_t) (end - p) };
        return n;
}
