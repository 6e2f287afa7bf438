/*
 * churn.c - many short-lived threads; checks that per-thread allocator state
 * is reclaimed (RSS stays flat) and that blocks outliving their thread are
 * still valid and freeable.
 *
 *   churn [nthreads=2000]
 *
 * Threads run in waves of WAVE, joined after each wave.  Each thread
 * allocates BLOCKS_PER_THREAD stamped blocks (16 B .. 8 KiB, malloc / calloc /
 * realloc), frees most of them itself and leaves KEEP_PER_THREAD in a global
 * hand-off array of atomic slots; whatever it displaces there (a block of an
 * earlier, already-exited thread) it verifies and frees.  main frees the rest
 * at the end.  VmRSS is sampled after the first WARM threads and at the end (after main freed the leftovers).
 *
 * Output: "churn ok: threads=N rss_warm_kb=A rss_end_kb=B", exit 0 (the caller
 * decides what RSS bound to assert); exit 1 on any verification failure.
 */
#define _GNU_SOURCE
#include "hzalloc.h"
#include "hzcheck.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAVE 4
#define WARM 100
#define BLOCKS_PER_THREAD 200
#define KEEP_PER_THREAD 8
#define NHANDOFF 256

static _Atomic(void *) g_handoff[NHANDOFF];

static size_t pick_size(hz_rng *r)
{
    uint64_t x = hz_rand(r) % 16;
    if (x < 10)
        return hz_range(r, 16, 256);
    if (x < 14)
        return hz_range(r, 257, 2048);
    return hz_range(r, 2049, 8192);
}

static void *thread_main(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    hz_rng rng;
    hz_rng_seed(&rng, 0xc4a27ULL ^ (id * 0x9E3779B97F4A7C15ULL));
    void *blk[BLOCKS_PER_THREAD];
    size_t sz[BLOCKS_PER_THREAD];
    uint64_t ck[BLOCKS_PER_THREAD];

    for (int i = 0; i < BLOCKS_PER_THREAD; i++) {
        size_t size = pick_size(&rng);
        void *p;
        switch (hz_rand(&rng) % 8) {
        case 0:
            p = XCALLOC(1, size);
            if (p)
                hz_verify_zero(p, size, "calloc");
            break;
        case 1: { /* grow via realloc */
            size_t small = size / 2 + 1;
            p = XMALLOC(small);
            if (!p)
                break;
            hz_stamp(p, small, 5);
            uintptr_t old = (uintptr_t)p;
            p = XREALLOC(p, size);
            if (p) {
                unsigned eb, gb;
                size_t off = hz_check_prefix(p, small, old, small, 5, &eb, &gb);
                if (off != (size_t)-1)
                    hz_fail("realloc(%zu -> %zu) lost contents at offset %zu", small, size,
                            off);
            }
            break;
        }
        default:
            p = XMALLOC(size);
        }
        if (!p)
            hz_fail("allocation of %zu bytes returned NULL", size);
        hz_check_align(p, hz_min_align(size), size, "malloc");
        blk[i] = p;
        sz[i] = size;
        ck[i] = hz_rand(&rng);
        hz_stamp(p, size, ck[i]);
        /* free some blocks early, interleaved with allocation */
        if (i >= 16 && hz_rand(&rng) % 2 == 0) {
            int j = (int)(hz_rand(&rng) % (uint64_t)i);
            if (blk[j]) {
                hz_verify(blk[j], sz[j], ck[j], "thread free");
                XFREE(blk[j]);
                blk[j] = NULL;
            }
        }
    }
    /* hand off a few surviving blocks, free the rest */
    int kept = 0;
    for (int i = BLOCKS_PER_THREAD - 1; i >= 0; i--) {
        if (!blk[i])
            continue;
        hz_verify(blk[i], sz[i], ck[i], "thread exit");
        if (kept < KEEP_PER_THREAD && sz[i] >= HZ_HDR_MIN) { /* needs the stamp header */
            kept++;
            void *old = atomic_exchange(&g_handoff[hz_rand(&rng) % NHANDOFF], blk[i]);
            if (old) {
                hz_verify_hdr(old, NULL, "block from an exited thread");
                XFREE(old);
            }
        } else {
            XFREE(blk[i]);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    hz_prog = "churn";
    long nthreads = 2000;
    if (argc > 1) {
        char *end;
        nthreads = strtol(argv[1], &end, 10);
        if (*end || nthreads <= 0) {
            fprintf(stderr, "usage: churn [nthreads=2000]\n");
            return 2;
        }
    }
    long rss_warm = -1, rss_end;
    long started = 0;
    while (started < nthreads) {
        pthread_t th[WAVE];
        int n = 0;
        for (; n < WAVE && started < nthreads; n++, started++) {
            int rc = pthread_create(&th[n], NULL, thread_main, (void *)(uintptr_t)started);
            if (rc)
                hz_fail("pthread_create failed: %s", strerror(rc));
        }
        for (int i = 0; i < n; i++) {
            int rc = pthread_join(th[i], NULL);
            if (rc)
                hz_fail("pthread_join failed: %s", strerror(rc));
        }
        if (rss_warm < 0 && started >= WARM)
            rss_warm = hz_rss_kb();
    }
    if (rss_warm < 0)
        rss_warm = hz_rss_kb();
    for (int i = 0; i < NHANDOFF; i++) {
        void *p = atomic_exchange(&g_handoff[i], NULL);
        if (p) {
            hz_verify_hdr(p, NULL, "final cleanup");
            XFREE(p);
        }
    }
    rss_end = hz_rss_kb();
    printf("churn ok: threads=%ld rss_warm_kb=%ld rss_end_kb=%ld\n", nthreads, rss_warm, rss_end);
    return 0;
}
