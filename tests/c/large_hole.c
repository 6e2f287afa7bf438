/* large_hole.c - a large block maps what it needs (units of a 64th of a segment), not whole
 * segments: the rest of its last registry granule is address space like any other (run it under
 * LD_PRELOAD of the library).
 *
 *   large_hole count SEG  : with the address space limited (RLIMIT_AS) to 256 MiB above what is
 *                           mapped, blocks of 1 MiB and 300 KiB alternately until one fails;
 *                           prints "count: blocks=N mib=M" (M: the MiB the blocks hold; with
 *                           whole 4 MiB segments per block, 64 blocks and 42 MiB fitted)
 *   large_hole foreign SEG: another mapping in the unused end of a block's last granule (SEG:
 *                           the segment size, the registry's granule) holds a chunk laid out as
 *                           glibc's mmapped chunks are; malloc_usable_size and free of its
 *                           pointer must reach glibc (free unmaps it), and the block itself
 *                           stays intact; prints "foreign: usable=U unmapped=1"
 *   large_hole race SEG   : as foreign, while another thread frees and allocates the block over
 *                           and over (from the large cache, or mapped anew): for
 *                           1..2 s, malloc_usable_size of the foreign pointer must stay glibc's, and its
 *                           free must then reach glibc (a version that read the block's header
 *                           to tell answered 0 thousands of times, or crashed reading a header
 *                           just unmapped); prints "race: wrong=0 unmapped=1"
 *   large_hole regrow SEG : 2000 times malloc(1 MiB + i KiB), 64 KiB written, free: with a large
 *                           cache the block stays where it is (a cached block too small grows in
 *                           place); prints "regrow: moved=N" (N: times the address changed)
 *   large_hole stale SEG  : a freed 1 MiB block cached with another mapping right after it, then
 *                           for 1.5 s a live malloc(2 MiB) every 100 ms (the cached block cannot
 *                           grow in place for it) and small-block traffic (slow paths that
 *                           return what is due): the cached block must still go back to the
 *                           OS delay_ms after its free (a version that put it back in the cache
 *                           after each failed growth made it new again every time, for good);
 *                           prints "stale: unmapped=1"
 *   large_hole grow SEG   : a block of 1 MiB with another mapping 1.75 MiB from its start and the
 *                           address space limited to 1 MiB more than what is mapped grows to
 *                           1.5 MiB in place (twice its reservation fits neither there nor
 *                           elsewhere: the growth takes just what it needs, as glibc's mremap
 *                           does); prints "grow: moved=0 kept=1"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "hzcheck.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define PAGE ((size_t)4096)

/* a mapping of len bytes exactly at `at`, or NULL if any of that address space is taken */
static char *map_at(char *at, size_t len)
{
    char *m = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (m != MAP_FAILED && m != at) hz_fail("MAP_FIXED_NOREPLACE ignored (kernel older than 4.17)");
    return m == MAP_FAILED ? NULL : m;
}

/* how many bytes of free address space follow `at`, looking no further than `most` */
static size_t free_after(char *at, size_t most)
{
    size_t n = 0;
    for (char *m; n < most && (m = map_at(at + n, PAGE)); n += PAGE) munmap(m, PAGE);
    return n;
}

/* the end of the mapping of a large block of n bytes at p: its header is in its first page,
 * and it maps units of a 64th of a segment */
static char *block_end(char *p, size_t n, size_t seg)
{
    size_t unit = seg / 64;
    return (char *)(((uintptr_t)p + n + unit - 1) & ~(uintptr_t)(unit - 1));
}

static int is_mapped(void *p) { return msync(p, PAGE, MS_ASYNC) == 0; }

/* a 1 MiB block, and a 64 KiB mapping in the free end of its last granule holding a chunk laid
 * out as glibc's mmapped chunks are (prev_size 0, size | IS_MMAPPED, the pointer 16 bytes in);
 * blocks whose end has no free 64 KiB (taken by older mappings) are kept aside, another tried */
static char *block_and_foreign(size_t seg, char **chunk)
{
    char *p = NULL, *m = NULL;
    for (int tries = 0; tries < 64 && !m; tries++) {
        if (!(p = malloc(MIB))) hz_fail("malloc(1 MiB)");
        char *granule_end = (char *)(((uintptr_t)p & ~(uintptr_t)(seg - 1)) + seg);
        for (char *at = block_end(p, MIB, seg); !m && at + 64 * KIB <= granule_end; at += 64 * KIB)
            m = map_at(at, 64 * KIB);
    }
    if (!m) hz_fail("no free 64 KiB after 64 blocks (segment %zu)", seg);
    ((size_t *)m)[0] = 0;
    ((size_t *)m)[1] = (64 * KIB) | 2;
    *chunk = m;
    return p;
}

static atomic_int churning = 1;

/* frees and allocates a block of 1 MiB until told to stop */
static void *churn(void *block)
{
    char *volatile p = block;
    while (atomic_load_explicit(&churning, memory_order_relaxed)) {
        free(p);
        if (!(p = malloc(MIB))) hz_fail("malloc(1 MiB) in the churn");
        p[0] = 1;
    }
    free(p);
    return NULL;
}

int main(int argc, char **argv)
{
    hz_prog = "large_hole";
    const char *mode = argc > 2 ? argv[1] : "";
    size_t seg = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
    if (!strcmp(mode, "count")) {
        enum { MAX = 4096 };
        static char *blocks[MAX];
        size_t n = 0, bytes = 0;
        hz_limit_as(hz_mapped_bytes() + 256 * MIB);
        for (; n < MAX; n++) {
            size_t len = n % 2 ? 300 * KIB : MIB;
            if (!(blocks[n] = malloc(len))) break;
            blocks[n][len - 1] = 1;
            bytes += len;
        }
        for (size_t i = 0; i < n; i++) free(blocks[i]);
        printf("count: blocks=%zu mib=%zu\n", n, bytes / MIB);
    } else if (!strcmp(mode, "foreign")) {
        char *m, *p = block_and_foreign(seg, &m);
        memset(p, 7, MIB);
        void *volatile q = m + 16;   /* volatile: the compiler does not see it is mmap's */
        size_t usable = malloc_usable_size(q);
        free(q);
        int gone = !is_mapped(m);
        if (!gone) munmap(m, 64 * KIB);
        for (size_t i = 0; i < MIB; i++)
            if (p[i] != 7) hz_fail("the block changed at %zu", i);
        printf("foreign: usable=%zu unmapped=%d\n", usable, gone);
    } else if (!strcmp(mode, "race")) {
        char *m, *p = block_and_foreign(seg, &m);
        void *volatile q = m + 16;
        pthread_t t;
        if (pthread_create(&t, NULL, churn, p)) hz_fail("pthread_create");
        long wrong = 0;
        for (time_t end = time(NULL) + 2; time(NULL) < end;)
            for (int i = 0; i < 10000; i++) wrong += malloc_usable_size(q) != 64 * KIB - 16;
        free(q);
        atomic_store(&churning, 0);
        pthread_join(t, NULL);
        int gone = !is_mapped(m);
        if (!gone) munmap(m, 64 * KIB);
        printf("race: wrong=%ld unmapped=%d\n", wrong, gone);
    } else if (!strcmp(mode, "regrow")) {
        uintptr_t last = 0;
        int moved = 0;
        for (size_t i = 0; i < 2000; i++) {
            char *volatile p = malloc(MIB + i * KIB);
            if (!p) hz_fail("malloc(1 MiB + %zu KiB)", i);
            moved += (uintptr_t)p != last;
            last = (uintptr_t)p;
            memset(p, 1, 64 * KIB);
            free(p);
        }
        printf("regrow: moved=%d\n", moved);
    } else if (!strcmp(mode, "stale")) {
        char *p = malloc(MIB);
        if (!p) hz_fail("malloc(1 MiB)");
        char *start = (char *)((uintptr_t)p & ~(uintptr_t)(PAGE - 1));
        char *guard = map_at(block_end(p, MIB, seg), PAGE);   /* NULL: taken already, as good */
        free(p);
        enum { ROUNDS = 15, SMALL = 4096 };
        static void *big[ROUNDS], *small[SMALL];
        for (int r = 0; r < ROUNDS; r++) {
            if (!(big[r] = malloc(2 * MIB))) hz_fail("malloc(2 MiB)");
            for (int i = 0; i < SMALL; i++)
                if (!(small[i] = malloc(512))) hz_fail("malloc(512)");
            for (int i = 0; i < SMALL; i++) free(small[i]);
            nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
        }
        int gone = !is_mapped(start);
        for (int r = 0; r < ROUNDS; r++) free(big[r]);
        if (guard) munmap(guard, PAGE);
        printf("stale: unmapped=%d\n", gone);
    } else if (!strcmp(mode, "grow")) {
        /* a block with room to grow to 1.5 MiB in place but not to twice its size (a page
         * mapped at 1.75 MiB, if nothing is there already): blocks without that room are kept
         * aside, and another one tried */
        char *p = NULL, *guard = NULL;
        for (int tries = 0; tries < 64; tries++, p = NULL) {
            if (!(p = malloc(MIB))) hz_fail("malloc(1 MiB)");
            char *start = (char *)((uintptr_t)p & ~(uintptr_t)(PAGE - 1)), *end = block_end(p, MIB, seg);
            char *wall = start + 7 * MIB / 4;
            size_t room = free_after(end, (size_t)(wall - end));
            if (end + room < block_end(p, 3 * MIB / 2, seg)) continue;
            if (end + room == wall) guard = map_at(wall, PAGE);
            break;
        }
        if (!p) hz_fail("no block with 0.5 MiB free after it in 64 tries");
        memset(p, 5, MIB);
        const uintptr_t was = (uintptr_t)p;
        hz_limit_as(hz_mapped_bytes() + MIB);
        errno = 0;
        char *q = realloc(p, 3 * MIB / 2);
        if (!q) hz_fail("realloc to 1.5 MiB failed: errno %d", errno);
        hz_limit_as(RLIM_INFINITY);
        int kept = 1;
        for (size_t i = 0; i < MIB; i++) kept &= q[i] == 5;
        memset(q + MIB, 6, MIB / 2);
        free(q);
        if (guard) munmap(guard, PAGE);
        printf("grow: moved=%d kept=%d\n", (uintptr_t)q != was, kept);
    } else {
        hz_fail("usage: large_hole count|foreign|race|regrow|stale|grow SEGMENT_SIZE");
    }
    return 0;
}
