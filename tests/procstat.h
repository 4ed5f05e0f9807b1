/* What the benchmarks and soaks read of a spotd process from /proc: a
 * /proc/PID/status field in KiB (VmRSS, VmHWM, RssAnon) and the number of
 * open file descriptors. -1 when the process or the field is gone. */
#pragma once
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static inline long proc_status_kb(pid_t pid, const char *key) {
        char path[64], line[256];
        long v = -1;
        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':')
                        v = atol(line + strlen(key) + 1);
        fclose(f);
        return v;
}

static inline long proc_open_fds(pid_t pid) {
        char path[64];
        long n = 0;
        snprintf(path, sizeof path, "/proc/%d/fd", (int) pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        for (struct dirent *e; (e = readdir(d));)
                n += e->d_name[0] != '.';
        closedir(d);
        return n;
}
