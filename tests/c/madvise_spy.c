/* madvise_spy.c - an LD_PRELOAD shim, loaded in front of the allocator: a large
 * madvise(MADV_DONTNEED) (1 MiB or more; HZ_SPY_MIN_LEN bytes if set) from a thread other than
 * the main one (the allocator's purger, or a thread that frees) takes 300 ms longer and raises
 * `hz_spy_in_madvise` meanwhile, so a test program can see whether
 * its allocations still complete while the purger is inside the call (they cannot if the
 * purger holds the allocator's lock across it). It also counts munmap calls of 1 MiB or more
 * by the main thread and by the others (`hz_spy_munmap_main`, `hz_spy_munmap_other`); with
 * HZ_SPY_SLOW_MUNMAP=1 such an munmap by another thread takes 300 ms longer too (a purger
 * behind with the mappings handed to it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

volatile int hz_spy_in_madvise;

int madvise(void *addr, size_t len, int advice)
{
    static int (*real)(void *, size_t, int);
    if (!real) real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "madvise");
    static size_t min_len;
    if (!min_len) {
        const char *e = getenv("HZ_SPY_MIN_LEN");
        min_len = e && atol(e) > 0 ? (size_t)atol(e) : (size_t)1 << 20;
    }
    if (advice != MADV_DONTNEED || len < min_len || gettid() == getpid())
        return real(addr, len, advice);
    hz_spy_in_madvise = 1;
    struct timespec nap = {0, 300000000L};
    nanosleep(&nap, NULL);
    int r = real(addr, len, advice);
    hz_spy_in_madvise = 0;
    return r;
}

volatile int hz_spy_munmap_main, hz_spy_munmap_other;

int munmap(void *addr, size_t len)
{
    static int (*real)(void *, size_t);
    if (!real) real = (int (*)(void *, size_t))dlsym(RTLD_NEXT, "munmap");
    if (len >= (1u << 20)) {
        if (gettid() == getpid()) {
            hz_spy_munmap_main++;
        } else {
            __atomic_fetch_add(&hz_spy_munmap_other, 1, __ATOMIC_RELAXED);
            const char *slow = getenv("HZ_SPY_SLOW_MUNMAP");
            struct timespec nap = {0, 300000000L};
            if (slow && *slow == '1') nanosleep(&nap, NULL);
        }
    }
    return real(addr, len);
}
