/* churn: thread churn.
 *
 * Creates and joins thousands of short-lived threads, WAVE at a time.  Each
 * thread does OPS malloc/free pairs (16..512 B, a private working set of 32
 * slots replaced at random), then frees everything and exits.  Measures the
 * allocator's per-thread setup/teardown cost as much as its fast path.
 * One op = one malloc+free pair; thread creation time is included.
 *
 *   churn [-t WAVE] [-s SCALE] [-n THREADS_TOTAL]
 */
#include "bench.h"
#include <pthread.h>

#define OPS 300
#define SLOTS 32
#define DEFAULT_THREADS 12000LL

typedef struct {
    uint64_t seed;
    uintptr_t acc;
    char pad[48];
} arg_t;

static void *worker(void *varg) {
    arg_t *a = varg;
    uint64_t seed = a->seed;
    uint64_t *slot[SLOTS];
    uintptr_t acc = 0;
    for (int i = 0; i < SLOTS; i++) {
        slot[i] = malloc((size_t)bench_range(&seed, 16, 512));
        slot[i][0] = (uint64_t)i;
    }
    for (int k = 0; k < OPS - SLOTS; k++) {
        uint64_t r = bench_rng(&seed);
        unsigned i = (unsigned)(r % SLOTS);
        size_t n = 16 + (size_t)((r >> 32) % 497);
        if (slot[i][0] != i) bench_die("churn: block content corrupted");
        acc += slot[i][0];
        free(slot[i]);
        slot[i] = malloc(n);
        slot[i][0] = (uint64_t)i;
        ((char *)slot[i])[n - 1] = 1;
    }
    for (int i = 0; i < SLOTS; i++) free(slot[i]);
    a->acc = acc;
    return NULL;
}

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 4, 0, "  churn: -t THREADS_PER_WAVE, -n THREADS_TOTAL");
    int W = o.threads;
    long long total = o.count > 0 ? o.count : bench_scaled(DEFAULT_THREADS, o.scale, W);
    long long waves = (total + W - 1) / W;
    pthread_t *th = bench_malloc_checked(sizeof(pthread_t) * (size_t)W);
    arg_t *a = aligned_alloc(64, sizeof(arg_t) * (size_t)W);
    if (!a) bench_die("churn: out of memory");
    uintptr_t acc = 0;
    long long created = 0;

    double t0 = bench_now();
    for (long long w = 0; w < waves; w++) {
        for (int t = 0; t < W; t++) {
            a[t].seed = 0xc4a2 + (uint64_t)(w * W + t);
            int e = pthread_create(&th[t], NULL, worker, &a[t]);
            if (e) bench_die("churn: pthread_create: %s", strerror(e));
        }
        for (int t = 0; t < W; t++) {
            pthread_join(th[t], NULL);
            acc += a[t].acc;
        }
        created += W;
    }
    double secs = bench_now() - t0;
    bench_sink = acc;
    free(th);
    free(a);
    bench_result("churn", created * OPS, secs, " threads_created=%lld wave=%d", created, W);
    return 0;
}
