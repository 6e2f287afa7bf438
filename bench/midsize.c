/* midsize: random sizes 8..32 KiB, T threads, each with a private working
 * set of 64 slots that it replaces at random.  Every page of a new block is
 * written.  One op = one malloc+free pair; ops_per_sec is over all threads.
 *
 *   midsize -t THREADS [-s SCALE] [-n OPS_PER_THREAD]
 */
#include "bench.h"
#include <pthread.h>

#define SLOTS 64
#define DEFAULT_OPS 2400000LL /* total over all threads */
#define PAGE 4096

typedef struct {
    long long ops;
    uint64_t seed;
    uintptr_t acc;
} arg_t;

static inline uint64_t *fill(size_t n, uint64_t tag) {
    char *p = malloc(n);
    for (size_t off = 0; off < n; off += PAGE) p[off] = (char)off;
    p[n - 1] = 1;
    ((uint64_t *)p)[0] = tag;
    return (uint64_t *)p;
}

static void *worker(void *varg) {
    arg_t *a = varg;
    uint64_t *slot[SLOTS];
    uint32_t size[SLOTS];
    uintptr_t acc = 0;
    uint64_t seed = a->seed; /* local copy: arg_t structs share cache lines */
    long long ops = a->ops;
    for (int i = 0; i < SLOTS; i++) {
        size[i] = (uint32_t)bench_range(&seed, 8192, 32768);
        slot[i] = fill(size[i], (uint64_t)i ^ size[i]);
    }
    for (long long k = 0; k < ops; k++) {
        uint64_t r = bench_rng(&seed);
        unsigned i = (unsigned)(r % SLOTS);
        uint32_t n = 8192 + (uint32_t)((r >> 32) % (32768 - 8192 + 1));
        uint64_t *p = slot[i];
        if (p[0] != ((uint64_t)i ^ size[i])) bench_die("midsize: block content corrupted");
        acc += ((unsigned char *)p)[size[i] - 1];
        free(p);
        slot[i] = fill(n, (uint64_t)i ^ n);
        size[i] = n;
    }
    for (int i = 0; i < SLOTS; i++) free(slot[i]);
    a->acc = acc;
    return NULL;
}

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 2, 0, "  midsize: -t THREADS, -n OPS_PER_THREAD");
    int T = o.threads;
    long long per = o.count > 0 ? o.count : bench_scaled(DEFAULT_OPS, o.scale, 100 * T) / T;
    pthread_t *th = bench_malloc_checked(sizeof(pthread_t) * (size_t)T);
    arg_t *a = bench_malloc_checked(sizeof(arg_t) * (size_t)T);

    double t0 = bench_now();
    for (int t = 0; t < T; t++) {
        a[t].ops = per;
        a[t].seed = 0x5eed + (uint64_t)t * 31337;
        if (pthread_create(&th[t], NULL, worker, &a[t])) bench_die("midsize: pthread_create failed");
    }
    uintptr_t acc = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        acc += a[t].acc;
    }
    double secs = bench_now() - t0;
    bench_sink = acc;
    free(th);
    free(a);
    bench_result("midsize", per * T, secs, " threads=%d", T);
    return 0;
}
