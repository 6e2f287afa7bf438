/* scratch: passive false sharing (after Hoard's cache-scratch).
 *
 * The main thread allocates one 8-byte object per thread, back to back, and
 * hands one to each thread.  Each thread frees the object it was given,
 * then repeatedly allocates an 8-byte object, writes it WRITES times and
 * frees it.  An allocator that hands the freed neighbour objects (which
 * share a cache line) back to different threads makes the writes ping-pong
 * between cores.  One op = one malloc+free pair (plus its writes).
 *
 *   scratch -t THREADS [-s SCALE] [-n ITERATIONS_PER_THREAD]
 */
#include "bench.h"
#include <pthread.h>

#define OBJ 8
#define WRITES 400
#define DEFAULT_ITERS 1200000LL /* total over all threads */

typedef struct {
    char *given;
    long long iters;
    uintptr_t acc;
    char pad[64];
} arg_t;

static void *worker(void *varg) {
    arg_t *a = varg;
    long long iters = a->iters;
    uintptr_t acc = 0;
    free(a->given);
    for (long long i = 0; i < iters; i++) {
        volatile char *p = malloc(OBJ);
        for (int w = 0; w < WRITES; w++) p[w & (OBJ - 1)] += (char)w;
        acc += (unsigned char)p[0];
        free((void *)p);
    }
    a->acc = acc;
    return NULL;
}

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 2, 0, "  scratch: -t THREADS, -n ITERATIONS_PER_THREAD");
    int T = o.threads;
    long long per = o.count > 0 ? o.count : bench_scaled(DEFAULT_ITERS, o.scale, 10 * T) / T;
    pthread_t *th = bench_malloc_checked(sizeof(pthread_t) * (size_t)T);
    arg_t *a = aligned_alloc(64, sizeof(arg_t) * (size_t)T);
    if (!a) bench_die("scratch: out of memory");

    for (int t = 0; t < T; t++) {
        a[t].given = bench_malloc_checked(OBJ);
        memset(a[t].given, 0, OBJ);
        a[t].iters = per;
    }
    double t0 = bench_now();
    for (int t = 0; t < T; t++)
        if (pthread_create(&th[t], NULL, worker, &a[t])) bench_die("scratch: pthread_create failed");
    uintptr_t acc = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        acc += a[t].acc;
    }
    double secs = bench_now() - t0;
    bench_sink = acc;
    free(th);
    free(a);
    bench_result("scratch", per * T, secs, " threads=%d writes=%d", T, WRITES);
    return 0;
}
