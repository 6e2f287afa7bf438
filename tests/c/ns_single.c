/* ns_single.c - a single-threaded program may still enter namespaces after the allocator
 * started its purger thread: unshare(CLONE_NEWUSER) and setns() into a mount namespace need a
 * process of one thread (EINVAL otherwise).
 *
 * Allocates and frees 80 MiB of 4000 B blocks and 64 MiB of 1 MiB blocks (the purger starts),
 * waits up to 1 s for a second thread to appear; a child of _Fork() (no fork handlers: it
 * inherits the purger's state but not its thread) calls unshare(CLONE_NEWUSER) under a 10 s
 * alarm; then the process allocates and frees the same again, calls setns(own mount
 * namespace, CLONE_NEWNS) and unshare(CLONE_NEWUSER), reads its RSS (no allocator call since
 * the frees: what the purger would have returned later must be back), allocates and frees the
 * same again (the purger may come back) and prints
 *   "ns_single: threads_before=N fork_child=R setns=R unshare=R rss_peak_kb=A rss_after_kb=B
 *    threads_after=M"
 * with R = 0, the errno name, or for the child "signal N". The caller compares with glibc.
 */
#define _GNU_SOURCE
#include "hzalloc.h"
#include "hzcheck.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define SMALL 20000
#define LARGE 64

static void *small[SMALL], *large[LARGE];

static long churn(void)   /* the RSS before the frees */
{
    for (int i = 0; i < SMALL; i++) {
        small[i] = XMALLOC(4000);
        if (!small[i]) hz_fail("out of memory");
        memset(small[i], 1, 4000);
    }
    for (int i = 0; i < LARGE; i++) {
        large[i] = XMALLOC(1 << 20);
        if (!large[i]) hz_fail("out of memory");
        memset(large[i], 1, 1 << 20);
    }
    long peak = hz_rss_kb();
    for (int i = 0; i < SMALL; i++) XFREE(small[i]);
    for (int i = 0; i < LARGE; i++) XFREE(large[i]);
    for (int i = 0; i < 64; i++) XFREE(XMALLOC((size_t)(16 + 16 * i)));   /* misses: a wanted purger starts */
    return peak;
}

extern pid_t _Fork(void);

/* unshare(CLONE_NEWUSER) in a child of _Fork: "0", the errno name, or "signal N" */
static void fork_child(char *out, size_t size)
{
    pid_t pid = _Fork();
    if (pid < 0) hz_fail("_Fork: %s", strerror(errno));
    if (pid == 0) {
        alarm(10);                  /* a hang becomes SIGALRM */
        _exit(unshare(CLONE_NEWUSER) == 0 ? 0 : errno == EINVAL ? 1 : 2);
    }
    int st;
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st)) snprintf(out, size, "signal%d", WTERMSIG(st));
    else snprintf(out, size, "%s", WEXITSTATUS(st) == 0 ? "0" : WEXITSTATUS(st) == 1 ? "EINVAL" : "other");
}

static const char *result(int r)
{
    return r == 0 ? "0" : errno == EINVAL ? "EINVAL" : errno == EPERM ? "EPERM" : strerror(errno);
}

int main(void)
{
    hz_prog = "ns_single";
    long peak = churn();
    const struct timespec ms10 = {0, 10000000L};
    for (int i = 0; i < 100 && hz_thread_count() < 2; i++) nanosleep(&ms10, NULL);
    int before = hz_thread_count();
    char child[64];
    fork_child(child, sizeof child);
    peak = churn();                 /* freed right before the calls: still dirty or cached */
    int fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fd < 0) hz_fail("open /proc/self/ns/mnt: %s", strerror(errno));
    char setns_r[64], unshare_r[64];
    snprintf(setns_r, sizeof setns_r, "%s", result(setns(fd, CLONE_NEWNS)));
    close(fd);
    snprintf(unshare_r, sizeof unshare_r, "%s", result(unshare(CLONE_NEWUSER)));
    long after = hz_rss_kb();
    churn();
    nanosleep(&ms10, NULL);
    printf("ns_single: threads_before=%d fork_child=%s setns=%s unshare=%s rss_peak_kb=%ld "
           "rss_after_kb=%ld threads_after=%d\n", before, child, setns_r, unshare_r, peak, after,
           hz_thread_count());
    return 0;
}
