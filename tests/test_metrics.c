#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"

Test(metrics, buf_printf_grows) {
        struct metrics_buf b = {};
        char big[5000];

        for (int i = 0; i < 1000; i++)
                metrics_buf_printf(&b, "line %d\n", i);
        cr_assert_not(b.failed);
        cr_assert_eq(strlen(b.data), b.len);
        cr_assert(strncmp(b.data, "line 0\nline 1\n", 14) == 0);
        cr_assert(strstr(b.data, "\nline 999\n"));
        cr_assert_geq(b.cap, b.len + 1);

        /* One write larger than any earlier capacity. */
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        size_t before = b.len;
        metrics_buf_printf(&b, "%s|", big);
        cr_assert_eq(b.len, before + sizeof(big));
        cr_assert_eq(strlen(b.data), b.len);
        cr_assert_eq(b.data[b.len - 1], '|');
        metrics_buf_free(&b);
        cr_assert_null(b.data);
        cr_assert_eq(b.len, 0);
}

Test(metrics, buf_failed_latches) {
        struct metrics_buf b = {};

        metrics_buf_printf(&b, "a");
        b.failed = 1;
        metrics_buf_printf(&b, "b");
        cr_assert_eq(b.len, 1);
        cr_assert_str_eq(b.data, "a");
        metrics_buf_free(&b);
}

Test(metrics, escape_label) {
        char out[64];

        metrics_escape_label("a\"b\\c\nd", out, sizeof(out));
        cr_assert_str_eq(out, "a\\\"b\\\\c\\nd");
        metrics_escape_label("plain", out, sizeof(out));
        cr_assert_str_eq(out, "plain");
        metrics_escape_label("", out, sizeof(out));
        cr_assert_str_eq(out, "");

        /* Truncation never leaves half an escape behind. */
        metrics_escape_label("ab\"cd", out, 4);
        cr_assert_str_eq(out, "ab");
        metrics_escape_label("ab\"cd", out, 5);
        cr_assert_str_eq(out, "ab\\\"");
        metrics_escape_label("abcdef", out, 4);
        cr_assert_str_eq(out, "abc");
}

Test(metrics, header_and_samples) {
        struct metrics_buf b = {};

        metrics_header(&b, "x_total", "counter", "Things.");
        metrics_sample(&b, "x_total", NULL, 12345678901.0);
        metrics_sample(&b, "x_total", "a=\"b\"", 0.25);
        metrics_sample(&b, "x_total", "", 3);
        cr_assert_str_eq(b.data, "# HELP x_total Things.\n# TYPE x_total counter\n"
                                 "x_total 12345678901\nx_total{a=\"b\"} 0.25\nx_total 3\n");
        metrics_buf_free(&b);

        /* A unix timestamp with a fraction must survive printing exactly. */
        double ts = 1764071933.123456;
        metrics_sample(&b, "t", NULL, ts);
        cr_assert(strncmp(b.data, "t ", 2) == 0);
        cr_assert_eq(strtod(b.data + 2, NULL), ts, "printed %s", b.data);
        metrics_buf_free(&b);

        metrics_sample(&b, "n", NULL, NAN);
        metrics_sample(&b, "i", NULL, INFINITY);
        cr_assert_str_eq(b.data, "n NaN\ni +Inf\n");
        metrics_buf_free(&b);
}

Test(metrics, histogram_cumulative) {
        static const double bounds[] = { 0.1, 1, 10 };
        struct metrics_histogram h = { .bounds = bounds, .nbounds = 3 };
        struct metrics_buf b = {};

        metrics_histogram_observe(&h, 0.05);
        metrics_histogram_observe(&h, 0.1); /* le is inclusive */
        metrics_histogram_observe(&h, 0.5);
        metrics_histogram_observe(&h, 5);
        metrics_histogram_observe(&h, 50);
        cr_assert_eq(h.buckets[0], 2);
        cr_assert_eq(h.buckets[1], 1);
        cr_assert_eq(h.buckets[2], 1);
        cr_assert_eq(h.count, 5);

        metrics_histogram_write(&b, "d_seconds", NULL, &h);
        cr_assert_str_eq(b.data, "d_seconds_bucket{le=\"0.1\"} 2\n"
                                 "d_seconds_bucket{le=\"1\"} 3\n"
                                 "d_seconds_bucket{le=\"10\"} 4\n"
                                 "d_seconds_bucket{le=\"+Inf\"} 5\n"
                                 "d_seconds_sum 55.65\n"
                                 "d_seconds_count 5\n");
        metrics_buf_free(&b);

        metrics_histogram_write(&b, "d_seconds", "src=\"spot\"", &h);
        cr_assert(strstr(b.data, "d_seconds_bucket{src=\"spot\",le=\"1\"} 3\n"));
        cr_assert(strstr(b.data, "d_seconds_bucket{src=\"spot\",le=\"+Inf\"} 5\n"));
        cr_assert(strstr(b.data, "d_seconds_count{src=\"spot\"} 5\n"));
        metrics_buf_free(&b);
}

static double cpu_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

Test(metrics, process_stats) {
        struct metrics_process p, q;
        time_t now = time(NULL);

        cr_assert_eq(metrics_process_read(&p), 0);
        cr_assert_geq(p.cpu_seconds, 0);
        cr_assert_gt(p.resident_bytes, 0);
        cr_assert_geq(p.virtual_bytes, p.resident_bytes);
        cr_assert_geq(p.open_fds, 3);
        cr_assert_geq(p.max_fds, p.open_fds);
        /* This process started moments ago; allow for clock tick rounding. */
        cr_assert_leq(p.start_time, (double) now + 2, "start %f now %ld", p.start_time, (long) now);
        cr_assert_gt(p.start_time, (double) now - 600, "start %f now %ld", p.start_time, (long) now);

        /* The fd count follows reality, exactly, counted independently. */
        uint64_t probed = 0;
        for (int i = 0; i < 4096; i++)
                probed += fcntl(i, F_GETFD) != -1;
        /* Valgrind keeps descriptors of its own that /proc lists but fcntl refuses. */
        const char *pre = getenv("LD_PRELOAD");
        if (pre && strstr(pre, "vgpreload"))
                cr_assert_geq(p.open_fds, probed);
        else
                cr_assert_eq(p.open_fds, probed);
        /* And one more open file is one more. */
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        cr_assert_geq(fd, 0);
        cr_assert_eq(metrics_process_read(&q), 0);
        cr_assert_eq(q.open_fds, p.open_fds + 1);
        close(fd);

        /* CPU time follows reality too. */
        double start = cpu_now();
        volatile unsigned long spin = 0;
        while (cpu_now() - start < 0.2)
                spin++;
        cr_assert_eq(metrics_process_read(&q), 0);
        cr_assert_geq(q.cpu_seconds - p.cpu_seconds, 0.1, "before %f after %f", p.cpu_seconds, q.cpu_seconds);
}
