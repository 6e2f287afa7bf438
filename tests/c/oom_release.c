/* oom_release.c - memory the allocator holds for reuse goes back before an allocation fails, and
 * malloc_trim returns it at once (glibc keeps neither).  The first three modes free a block the
 * allocator may keep, then limit the address space (RLIMIT_AS) to HEADROOM above what was mapped
 * before that block came, so that the next request fits only if the freed block's address space
 * is really given back (as glibc gives it back):
 *
 *   oom_release cache  : a 30 MiB block freed (the large cache keeps its 32 MiB reservation);
 *                        with 48 MiB of headroom, malloc(34 MiB) must succeed (36 MiB, 40
 *                        while it is aligned); prints "cache: ok=1"
 *   oom_release pool   : a block aligned to 16 MiB freed (its pool region, 64 MiB, stays while
 *                        it is the only one); with 48 MiB of headroom, malloc(36 MiB) must
 *                        succeed; prints "pool: ok=1"
 *   oom_release slab   : a 30 MiB block freed (cached); with 20 MiB of headroom, 6 MiB of 1 KiB
 *                        blocks (new segments: 4 MiB each, 8 while one is aligned) must come;
 *                        prints "slab: ok=1"
 *   oom_release doomed : with the purger started (30 MiB of large blocks freed past max_dirty,
 *                        then allocation misses), 50 rounds of malloc(40 MiB) + touch + free
 *                        with 80 MiB of headroom: a freed mapping handed to the purger must
 *                        not make the next one fail; prints "doomed: threads=N failures=0"
 *                        (N: the process's threads, 2 with the purger)
 *   oom_release trim   : the purger started as above, 4 blocks of 40 MiB touched and freed,
 *                        then malloc_trim(0): right after it, the address space is back within
 *                        16 MiB of what it was before, also when the purger is slow to unmap
 *                        what it was handed (tests/c/madvise_spy.c, HZ_SPY_SLOW_MUNMAP=1);
 *                        prints "trim: threads=N back=1"
 * errno must be what it was before every allocation that succeeds.
 * Run it under LD_PRELOAD of the library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "hzcheck.h"

#define MIB ((size_t)1 << 20)

/* a block of n bytes that must come, written over its length; errno stays as it was */
static void *must_alloc(size_t n, size_t align)
{
    errno = 1234;
    char *p = align ? aligned_alloc(align, n) : malloc(n);
    if (!p) hz_fail("%zu bytes (aligned to %zu) failed: errno %d", n, align, errno);
    if (errno != 1234) hz_fail("errno changed to %d by an allocation that succeeded", errno);
    memset(p, 1, n);
    return p;
}

static void cached_block(void) { free(must_alloc(30 * MIB, 0)); }

/* the purger starts once the large cache holds more than max_dirty and a thread misses */
static void start_purger(void)
{
    void *w[3];
    for (int i = 0; i < 3; i++) w[i] = must_alloc(10 * MIB, 0);
    for (int i = 0; i < 3; i++) free(w[i]);
    for (int i = 0; i < 3000; i++) {
        void *volatile p = malloc(16 + (size_t)i);   /* volatile: kept, not folded away */
        free(p);
    }
    malloc_trim(0);
}

int main(int argc, char **argv)
{
    hz_prog = "oom_release";
    const char *mode = argc > 1 ? argv[1] : "";
    size_t base = hz_mapped_bytes();
    if (!strcmp(mode, "cache")) {
        cached_block();
        hz_limit_as(base + 48 * MIB);
        free(must_alloc(34 * MIB, 0));
        printf("cache: ok=1\n");
    } else if (!strcmp(mode, "pool")) {
        free(must_alloc(100, 16 * MIB));
        hz_limit_as(base + 48 * MIB);
        free(must_alloc(36 * MIB, 0));
        printf("pool: ok=1\n");
    } else if (!strcmp(mode, "slab")) {
        cached_block();
        hz_limit_as(base + 20 * MIB);
        enum { N = 6 * 1024 };
        static void *blocks[N];
        for (int i = 0; i < N; i++) blocks[i] = must_alloc(1024, 0);
        for (int i = 0; i < N; i++) free(blocks[i]);
        printf("slab: ok=1\n");
    } else if (!strcmp(mode, "doomed")) {
        start_purger();
        int n = hz_thread_count(), failures = 0;
        hz_limit_as(hz_mapped_bytes() + 80 * MIB);
        for (int i = 0; i < 50; i++) {
            char *p = malloc(40 * MIB);
            if (!p) { failures++; continue; }
            memset(p, 1, 40 * MIB);
            free(p);
        }
        printf("doomed: threads=%d failures=%d\n", n, failures);
    } else if (!strcmp(mode, "trim")) {
        start_purger();
        size_t before = hz_mapped_bytes();
        void *p[4];
        for (int i = 0; i < 4; i++) p[i] = must_alloc(40 * MIB, 0);
        for (int i = 0; i < 4; i++) free(p[i]);
        malloc_trim(0);
        printf("trim: threads=%d back=%d\n", hz_thread_count(), hz_mapped_bytes() <= before + 16 * MIB);
    } else {
        hz_fail("usage: oom_release cache|pool|slab|doomed|trim");
    }
    return 0;
}
