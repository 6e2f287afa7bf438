/* aligned_pool.c - small blocks with alignments beyond every slab class (the aligned pool).
 *
 *   aligned_pool threads  : 4 threads, each 3000 rounds of: posix_memalign / aligned_alloc /
 *                           memalign of 1..12000 B at a random alignment of 512 KiB .. 16 MiB
 *                           into one of 24 slots (the slot's old block is checked and freed
 *                           first; every block is stamped over its whole length), with
 *                           malloc_trim now and then; prints "threads: blocks=N maps=M"
 *                           (M: /proc/self/maps lines with every block still live)
 *   aligned_pool interior : free() of a pointer 64 B into a live 1 MiB-aligned block, then its
 *                           usable size; the block must stay intact (checks: an abort);
 *                           prints "interior: usable=U intact=1"
 *   aligned_pool double   : a 1 MiB-aligned block freed twice, then two more allocated: they
 *                           must differ (checks: the second free aborts); prints
 *                           "double: distinct=1"
 *   aligned_pool race     : behind tests/c/madvise_spy.c (a non-main thread's madvise of 64 KiB
 *                           or more takes 300 ms): 40 blocks of 64 KiB aligned to 4 MiB freed
 *                           (past the pool's budget of kept pages), then a thread frees a
 *                           victim block and, while that free sits in its madvise, the main
 *                           thread frees it again (checks: that second free aborts), then
 *                           allocates two blocks, one before and one after the thread is done:
 *                           they must differ; prints "race: spied=1 distinct=1"
 *   aligned_pool rlimit   : with RLIMIT_AS 48 MiB above what is mapped (no room for a pool
 *                           region of 16 MiB alignments: 128 MiB while it is aligned), blocks
 *                           aligned to 16 MiB still come (from the large box); prints
 *                           "rlimit: ok=1"
 * Run it under LD_PRELOAD of the library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "hzcheck.h"

#define THREADS 4
#define ROUNDS 3000
#define SLOTS 24
#define MIB ((size_t)1 << 20)

static long maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) hz_fail("cannot open /proc/self/maps");
    long n = 0;
    for (int c; (c = fgetc(f)) != EOF;) n += c == '\n';
    fclose(f);
    return n;
}

static void *aligned(hz_rng *r, size_t align, size_t n)
{
    void *p = NULL;
    switch (hz_rand(r) % 3) {
    case 0:
        if (posix_memalign(&p, align, n)) p = NULL;
        break;
    case 1: p = aligned_alloc(align, n); break;
    default: p = memalign(align, n); break;
    }
    if (!p) hz_fail("aligned allocation of %zu B at %zu failed", n, align);
    if ((uintptr_t)p % align) hz_fail("%p is not aligned to %zu", p, align);
    if (malloc_usable_size(p) < n) hz_fail("usable %zu < %zu", malloc_usable_size(p), n);
    return p;
}

typedef struct {
    unsigned char *p;
    size_t n;
    uint64_t cookie;
} slot_t;

static pthread_barrier_t live;
static long maps_live;

static void *worker(void *arg)
{
    hz_rng r;
    hz_rng_seed(&r, 0xa11 + (uint64_t)(uintptr_t)arg);
    slot_t s[SLOTS] = {{0}};
    for (int round = 0; round < ROUNDS; round++) {
        slot_t *x = &s[hz_rand(&r) % SLOTS];
        if (x->p) {
            hz_verify(x->p, x->n, x->cookie, "aligned pool block");
            free(x->p);
        }
        size_t align = (512 * 1024) << (hz_rand(&r) % 6);   /* 512 KiB .. 16 MiB */
        x->n = 1 + hz_rand(&r) % 12000;
        x->p = aligned(&r, align, x->n);
        x->cookie = hz_rand(&r);
        hz_stamp(x->p, x->n, x->cookie);
        if (round % 500 == 499) malloc_trim(0);
    }
    for (int i = 0; i < SLOTS; i++)
        if (!s[i].p) hz_fail("slot %d never filled", i);
    if (pthread_barrier_wait(&live) == PTHREAD_BARRIER_SERIAL_THREAD) maps_live = maps();
    pthread_barrier_wait(&live);
    for (int i = 0; i < SLOTS; i++) {
        hz_verify(s[i].p, s[i].n, s[i].cookie, "aligned pool block");
        free(s[i].p);
    }
    return NULL;
}

static void threads(void)
{
    pthread_t t[THREADS];
    pthread_barrier_init(&live, NULL, THREADS);
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i)) hz_fail("pthread_create");
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    printf("threads: blocks=%d maps=%ld\n", THREADS * SLOTS, maps_live);
}

static void interior(void)
{
    unsigned char *a = aligned_alloc(MIB, 4096);
    if (!a) hz_fail("aligned_alloc failed");
    memset(a, 0x5a, 4096);
    unsigned char *volatile inside = a + 64;   /* (hidden from gcc's free warning) */
    free(inside);
    size_t usable = malloc_usable_size(a + 64);
    unsigned char *b = aligned_alloc(MIB, 4096);   /* must not be a's slot */
    if (b) memset(b, 0x33, 4096);
    int intact = a[64] == 0x5a && a[4095] == 0x5a && malloc_usable_size(a) >= 4096 && b != a;
    printf("interior: usable=%zu intact=%d\n", usable, intact);
    free(b);
    free(a);
}

static void double_free(void)
{
    void *volatile a = aligned_alloc(MIB, 100);   /* (hidden from gcc's use-after-free warning) */
    if (!a) hz_fail("aligned_alloc failed");
    free(a);
    free(a);
    void *volatile b = aligned_alloc(MIB, 100), *volatile c = aligned_alloc(MIB, 100);
    printf("double: distinct=%d\n", b && c && b != c);
    free(b);
    free(c);
}

static void *free_it(void *p)
{
    free(p);
    return NULL;
}

static void race(void)
{
    volatile int *spy = (volatile int *)dlsym(RTLD_DEFAULT, "hz_spy_in_madvise");
    if (!spy) hz_fail("race: run behind madvise_spy");
    void *b[40];
    for (int i = 0; i < 40; i++) b[i] = memset(aligned_alloc(4 * MIB, 65536), 7, 65536);
    void *volatile victim = memset(aligned_alloc(4 * MIB, 65536), 9, 65536);
    for (int i = 0; i < 40; i++) free(b[i]);
    pthread_t t;
    if (pthread_create(&t, NULL, free_it, victim)) hz_fail("pthread_create");
    int spied = 0;
    for (int i = 0; i < 2000 && !(spied = *spy); i++) usleep(1000);
    free(victim);                      /* a second free while the first one is in its madvise */
    void *volatile x = aligned_alloc(4 * MIB, 100);   /* (volatile: gcc may fold x != y) */
    pthread_join(t, NULL);
    void *volatile y = aligned_alloc(4 * MIB, 100);
    printf("race: spied=%d distinct=%d\n", spied, x && y && x != y);
    free(x);
    free(y);
}

static void rlimit(void)
{
    hz_limit_as(hz_mapped_bytes() + 48 * MIB);
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        unsigned char *p = aligned_alloc(16 * MIB, 64);
        ok &= p && (uintptr_t)p % (16 * MIB) == 0 && malloc_usable_size(p) >= 64;
        if (p) memset(p, 1, 64);
        free(p);
    }
    printf("rlimit: ok=%d\n", ok);
}

int main(int argc, char **argv)
{
    hz_prog = "aligned_pool";
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "threads")) threads();
    else if (!strcmp(mode, "interior")) interior();
    else if (!strcmp(mode, "double")) double_free();
    else if (!strcmp(mode, "rlimit")) rlimit();
    else if (!strcmp(mode, "race")) race();
    else hz_fail("usage: aligned_pool threads|interior|double|race|rlimit");
    return 0;
}
