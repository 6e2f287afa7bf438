/* large_memory.c - what large blocks keep resident, and the edges of their API.
 *
 *   large_memory shrink : 16 blocks of 8 MiB, written, then realloc'd down to 300000 B each;
 *                         prints "shrink: usable_kb=U rss_kb=R" (R with the blocks still live)
 *   large_memory trim   : 5 blocks of 3 MiB, written and freed (the large cache keeps them),
 *                         then malloc_trim(0); prints "trim: before_kb=A after_kb=B ret=N"
 *   large_memory idle   : 5 blocks of 3 MiB, written and freed, then 0.8 s of small bursts
 *                         whose caches overflow (slow paths, no large block); prints
 *                         "idle: at_free_kb=A after_kb=B"
 *   large_memory errno  : large blocks grown by realloc, each past its reservation, errno set
 *                         to 0 before each call; prints "errno: grown=N dirty=D" (D: successes
 *                         that left errno set)
 *   large_memory zero_align : aligned_alloc(A, 0) for A = 128 KiB .. 8 MiB; prints
 *                         "zero_align: A=U ..." (usable sizes)
 *   large_memory interior : free() of a pointer 5 MiB into a live 16 MiB block, then its usable
 *                         size; the block must stay intact (a spec with checks aborts instead);
 *                         prints "interior: usable=U intact=1"
 *   large_memory cycle  : 12 rounds of two 20 MiB blocks written whole and a 64 MiB block
 *                         written at one page (liblzma's encoder, made and ended in a loop),
 *                         with small traffic between (slow paths start the purger); prints
 *                         "cycle: faults=F", the page faults of the last 8 rounds
 *   large_memory overcommit : malloc and calloc of 64 TiB (far past RAM and swap); prints
 *                         "overcommit: malloc=N calloc=N enomem=E" (N: 1 if it returned a
 *                         block; E: 1 if both failed with ENOMEM)
 *   large_memory calloc_cycle : 12 rounds of calloc(8 MiB), written whole and freed (a buffer
 *                         of zeros filled in a loop); prints "calloc_cycle: faults=F zero=Z"
 *                         (F: page faults of the last 8 rounds, Z: 1 if every calloc read zero)
 *   large_memory calloc_reuse : a 2 MiB and a 24 MiB block, each written at a few places
 *                         and freed (the large cache keeps them), then calloc'd again; prints
 *                         "calloc_reuse: grew_kb=G zero=Z" (G: the RSS the callocs added,
 *                         Z: 1 if every byte of both read as zero)
 * Run it under LD_PRELOAD of the library (malloc_trim is the preloaded one).
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "hzcheck.h"

#define MIB (1024 * 1024)

static void *touched(size_t n)
{
    void *p = malloc(n);
    if (!p) hz_fail("malloc(%zu) failed", n);
    return memset(p, 0x5a, n);
}

static void shrink(void)
{
    void *b[16];
    size_t usable = 0;
    for (int i = 0; i < 16; i++) b[i] = touched(8 * MIB);
    for (int i = 0; i < 16; i++) {
        b[i] = realloc(b[i], 300000);
        if (!b[i]) hz_fail("realloc down failed");
        if (((unsigned char *)b[i])[299999] != 0x5a) hz_fail("realloc down lost the contents");
        usable += malloc_usable_size(b[i]);
    }
    printf("shrink: usable_kb=%zu rss_kb=%ld\n", usable / 1024, hz_rss_kb());
    for (int i = 0; i < 16; i++) free(b[i]);
}

static void free_five_large(void)
{
    void *b[5];
    for (int i = 0; i < 5; i++) b[i] = touched(3 * MIB);
    for (int i = 0; i < 5; i++) free(b[i]);
}

static void trim(void)
{
    free_five_large();
    long before = hz_rss_kb();
    int ret = malloc_trim(0);
    printf("trim: before_kb=%ld after_kb=%ld ret=%d\n", before, hz_rss_kb(), ret);
}

static long minor_faults(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : -1;
}

static void nap_ms(long ms)
{
    struct timespec t = {0, ms * 1000 * 1000};
    nanosleep(&t, NULL);
}

static void idle(void)
{
    free_five_large();
    long at_free = hz_rss_kb();
    static void *small[1024];
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (size_t size = 16; size <= 1024; size *= 2) {   /* overflow each class's caches */
            for (int i = 0; i < 1024; i++) small[i] = touched(size);
            for (int i = 0; i < 1024; i++) free(small[i]);
        }
        nap_ms(20);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 800);
    printf("idle: at_free_kb=%ld after_kb=%ld\n", at_free, hz_rss_kb());
}

static void grow_errno(void)
{
    int grown = 0, dirty = 0;
    for (int round = 0; round < 4; round++) {
        char *p = touched(5 * MIB);
        void *neighbour = touched(5 * MIB);   /* likely mapped right below or above */
        for (size_t n = 9 * MIB; n <= 72 * MIB; n *= 2) {
            errno = 0;
            char *q = realloc(p, n);
            if (!q) hz_fail("realloc up to %zu failed", n);
            if (q[5 * MIB - 1] != 0x5a) hz_fail("realloc up lost the contents");
            p = q;
            grown++;
            dirty += errno != 0;
        }
        free(p);
        free(neighbour);
    }
    printf("errno: grown=%d dirty=%d\n", grown, dirty);
}

static void zero_align(void)
{
    printf("zero_align:");
    for (size_t a = 128 * 1024; a <= 8 * MIB; a *= 2) {
        void *p = aligned_alloc(a, 0);
        if (!p) hz_fail("aligned_alloc(%zu, 0) failed", a);
        if ((uintptr_t)p % a) hz_fail("aligned_alloc(%zu, 0) misaligned", a);
        printf(" %zu=%zu", a, malloc_usable_size(p));
        free(p);
    }
    printf("\n");
}

static void interior(void)
{
    unsigned char *a = touched(16 * MIB);
    unsigned char *volatile inside = a + 5 * MIB;   /* (hidden from gcc's free warning) */
    free(inside);                   /* a wild free into the block's body: never glibc's */
    size_t usable = malloc_usable_size(a + 6 * MIB);
    int intact = a[5 * MIB] == 0x5a && a[16 * MIB - 1] == 0x5a && malloc_usable_size(a) >= 16 * MIB;
    printf("interior: usable=%zu intact=%d\n", usable, intact);
    free(a);
}

static void cycle(void)
{
    static void *small[256];
    long before = 0;
    for (int round = 0; round < 12; round++) {
        if (round == 4) before = minor_faults();
        char *b1 = touched(20 * MIB), *b2 = touched(20 * MIB), *big = malloc(64 * MIB);
        if (!big) hz_fail("malloc(64 MiB) failed");
        big[0] = 1;
        for (size_t size = 16; size <= 1024; size *= 2) {
            for (int i = 0; i < 256; i++) small[i] = touched(size);
            for (int i = 0; i < 256; i++) free(small[i]);
        }
        if (round % 2) { free(big); free(b2); free(b1); }   /* either order: the cache must */
        else { free(b1); free(b2); free(big); }             /* keep both 20 MiB blocks */
        nap_ms(5);   /* far below delay_ms: the cache keeps what it kept */
    }
    printf("cycle: faults=%ld\n", minor_faults() - before);
}

/* n bytes written at a few places and freed, then calloc'd again: the RSS that calloc added */
static long calloc_again(size_t n, int *zero)
{
    unsigned char *p = malloc(n);
    if (!p) hz_fail("malloc(%zu) failed", n);
    for (size_t at = 0; at + 100 <= n; at += n / 7) memset(p + at, 0x5a, 100);
    memset(p + n / 2, 0x5a, n / 64);
    memset(p + n - 100, 0x5a, 100);
    free(p);
    long rss = hz_rss_kb();
    unsigned char *q = calloc(1, n);
    if (!q) hz_fail("calloc(%zu) failed", n);
    long grew = hz_rss_kb() - rss;
    for (size_t i = 0; i < n; i++) *zero &= q[i] == 0;
    free(q);
    return grew;
}

static void overcommit(void)
{
    size_t n = (size_t)1 << 46;
    errno = 0;
    void *p = malloc(n);
    int enomem = errno == ENOMEM;
    errno = 0;
    void *q = calloc(1, n);
    enomem &= errno == ENOMEM;
    printf("overcommit: malloc=%d calloc=%d enomem=%d\n", p != NULL, q != NULL, enomem);
    free(p);
    free(q);
}

static void calloc_cycle(void)
{
    long before = 0;
    int zero = 1;
    for (int round = 0; round < 12; round++) {
        if (round == 4) before = minor_faults();
        size_t n = 8 * MIB;
        unsigned char *p = calloc(1, n);
        if (!p) hz_fail("calloc(%zu) failed", n);
        for (size_t i = 0; i < n; i += 512) zero &= p[i] == 0 && p[i + 511] == 0;
        memset(p, 0x5a, n);
        free(p);
    }
    printf("calloc_cycle: faults=%ld zero=%d\n", minor_faults() - before, zero);
}

static void calloc_reuse(void)
{
    int zero = 1;
    long grew = calloc_again(2 * MIB, &zero) + calloc_again(24 * MIB, &zero);
    printf("calloc_reuse: grew_kb=%ld zero=%d\n", grew, zero);
}

int main(int argc, char **argv)
{
    hz_prog = "large_memory";
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "shrink")) shrink();
    else if (!strcmp(mode, "trim")) trim();
    else if (!strcmp(mode, "idle")) idle();
    else if (!strcmp(mode, "errno")) grow_errno();
    else if (!strcmp(mode, "zero_align")) zero_align();
    else if (!strcmp(mode, "interior")) interior();
    else if (!strcmp(mode, "cycle")) cycle();
    else if (!strcmp(mode, "calloc_reuse")) calloc_reuse();
    else if (!strcmp(mode, "calloc_cycle")) calloc_cycle();
    else if (!strcmp(mode, "overcommit")) overcommit();
    else hz_fail("unknown mode '%s'", mode);
    return 0;
}
