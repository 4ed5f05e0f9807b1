/* A private systemd-journald for tests: in a mount namespace of the test
 * process, on tmpfs, so it never touches the machine's journal and works as
 * root without systemd as PID 1. Criterion tests only (it asserts). */
#pragma once
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef JOURNALD
#define JOURNALD "/lib/systemd/systemd-journald"
#endif

static pid_t journald_start(void) {
        cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare: %s (the test needs root)", strerror(errno));
        cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
        mkdir("/run/systemd", 0755);
        mkdir("/run/systemd/journal", 0755);
        mkdir("/run/log", 0755);
        mkdir("/run/log/journal", 0755);
        cr_assert_eq(mount("tmpfs", "/run/systemd/journal", "tmpfs", 0, "mode=0755"), 0);
        cr_assert_eq(mount("tmpfs", "/run/log/journal", "tmpfs", 0, "mode=0755"), 0);
        pid_t pid = fork();
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion takes it along */
                int null = open("/dev/null", O_RDWR);
                dup2(null, 0), dup2(null, 1), dup2(null, 2);
                execl(JOURNALD, JOURNALD, NULL);
                _exit(127);
        }
        struct stat st;
        for (int i = 0; i < 100 && stat("/run/systemd/journal/socket", &st) < 0; i++)
                usleep(50 * 1000);
        cr_assert_eq(stat("/run/systemd/journal/socket", &st), 0, "journald did not create its socket");
        return pid;
}
