/* Small helpers shared by every module: cleanup attributes and ownership
 * transfer, in the manner of systemd's macro.h. */
#pragma once
#include <stdlib.h>
#include <string.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p) { free(*(void **)p); }
#define _cleanup_free_ _cleanup_(freep)

/* Hands ownership on: returns the pointer and clears the variable so its
 * cleanup attribute does nothing. */
#define TAKE_PTR(p) ({ typeof(p) _p_ = (p); (p) = NULL; _p_; })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                 \
        static inline void func##p(type *p) {                   \
                if (*p) func(*p);                               \
        }

static inline int streq_ptr(const char *a, const char *b) {
        if (!a || !b) return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)

#include <stdio.h>
static inline void fclosep_(FILE **f) { if (*f) fclose(*f); }
