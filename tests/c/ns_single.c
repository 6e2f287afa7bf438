/* ns_single.c - a single-threaded program may still enter namespaces after the allocator
 * started its purger thread: unshare(CLONE_NEWUSER) and setns() into a mount namespace need a
 * process of one thread (EINVAL otherwise).
 *
 * Allocates and frees 80 MiB of 4000 B blocks and 64 MiB of 1 MiB blocks (the purger starts),
 * waits up to 1 s for a second thread to appear, then calls setns(own mount namespace,
 * CLONE_NEWNS) and unshare(CLONE_NEWUSER), then allocates and frees the same again (the purger
 * may come back) and prints
 *   "ns_single: threads_before=N setns=R unshare=R threads_after=M"
 * with R = 0 or the errno name. The caller compares with the run under glibc.
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
#include <unistd.h>

#define SMALL 20000
#define LARGE 64

static void *small[SMALL], *large[LARGE];

static void churn(void)
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
    for (int i = 0; i < SMALL; i++) XFREE(small[i]);
    for (int i = 0; i < LARGE; i++) XFREE(large[i]);
    for (int i = 0; i < 64; i++) XFREE(XMALLOC((size_t)(16 + 16 * i)));   /* misses: a wanted purger starts */
}

static const char *result(int r)
{
    return r == 0 ? "0" : errno == EINVAL ? "EINVAL" : errno == EPERM ? "EPERM" : strerror(errno);
}

int main(void)
{
    hz_prog = "ns_single";
    churn();
    const struct timespec ms10 = {0, 10000000L};
    for (int i = 0; i < 100 && hz_thread_count() < 2; i++) nanosleep(&ms10, NULL);
    int before = hz_thread_count();
    int fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fd < 0) hz_fail("open /proc/self/ns/mnt: %s", strerror(errno));
    char setns_r[64], unshare_r[64];
    snprintf(setns_r, sizeof setns_r, "%s", result(setns(fd, CLONE_NEWNS)));
    close(fd);
    snprintf(unshare_r, sizeof unshare_r, "%s", result(unshare(CLONE_NEWUSER)));
    churn();
    nanosleep(&ms10, NULL);
    printf("ns_single: threads_before=%d setns=%s unshare=%s threads_after=%d\n", before, setns_r,
           unshare_r, hz_thread_count());
    return 0;
}
