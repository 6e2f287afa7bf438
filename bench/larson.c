/* larson: server simulation (after Larson & Krishnan).
 *
 * T chains of threads.  Each chain owns an array of SLOTS blocks of random
 * size 10..500 B and replaces random slots.  After a round a thread creates
 * a fresh thread, hands it the array and exits, so most frees are of blocks
 * allocated by a thread that no longer exists (cross-thread frees).  The
 * initial blocks are allocated by the main thread.
 * One op = one malloc+free pair; ops_per_sec is the total over all threads.
 *
 *   larson -t THREADS [-s SCALE] [-n OPS_PER_THREAD_PER_ROUND]
 */
#include "bench.h"
#include <pthread.h>

#define SLOTS 1000
#define ROUNDS 20
#define DEFAULT_OPS_PER_ROUND 1200000LL /* total over all threads */

typedef struct {
    uint64_t **slot;
    uint32_t *size;
    uint64_t seed;
    long long ops_per_round;
    int rounds_left;
    long long ops_done;
} chain_t;

static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int chains_done;
static pthread_attr_t detached;

static void *worker(void *arg) {
    chain_t *c = arg;
    uint64_t seed = c->seed; /* local copy: chain_t structs share cache lines */
    uint64_t **slot = c->slot;
    uint32_t *size = c->size;
    for (long long k = 0; k < c->ops_per_round; k++) {
        uint64_t r = bench_rng(&seed);
        unsigned i = (unsigned)(r % SLOTS);
        uint32_t n = 10 + (uint32_t)((r >> 32) % 491);
        uint64_t *p = slot[i];
        if (p[0] != ((uint64_t)i * 2654435761u ^ size[i])) bench_die("larson: block content corrupted");
        free(p);
        p = malloc(n);
        p[0] = (uint64_t)i * 2654435761u ^ n;
        ((char *)p)[n - 1] = (char)k;
        slot[i] = p;
        size[i] = n;
    }
    c->seed = seed;
    c->ops_done += c->ops_per_round;
    if (--c->rounds_left > 0) {
        pthread_t t;
        int e = pthread_create(&t, &detached, worker, c);
        if (e) bench_die("larson: pthread_create: %s", strerror(e));
    } else {
        pthread_mutex_lock(&done_mu);
        chains_done++;
        pthread_cond_signal(&done_cv);
        pthread_mutex_unlock(&done_mu);
    }
    return NULL;
}

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 2, 0, "  larson: -t THREADS, -n OPS_PER_THREAD_PER_ROUND");
    int T = o.threads;
    long long per_round = o.count > 0 ? o.count : bench_scaled(DEFAULT_OPS_PER_ROUND, o.scale, 1000 * T) / T;
    chain_t *c = bench_malloc_checked(sizeof(chain_t) * (size_t)T);

    pthread_attr_init(&detached);
    pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);

    /* Initial blocks come from the main thread. */
    for (int t = 0; t < T; t++) {
        c[t].slot = bench_malloc_checked(sizeof(uint64_t *) * SLOTS);
        c[t].size = bench_malloc_checked(sizeof(uint32_t) * SLOTS);
        c[t].seed = 0x1a25 + (uint64_t)t * 7919;
        c[t].ops_per_round = per_round;
        c[t].rounds_left = ROUNDS;
        c[t].ops_done = 0;
        for (int i = 0; i < SLOTS; i++) {
            uint32_t n = (uint32_t)bench_range(&c[t].seed, 10, 500);
            uint64_t *p = bench_malloc_checked(n);
            p[0] = (uint64_t)i * 2654435761u ^ n;
            c[t].slot[i] = p;
            c[t].size[i] = n;
        }
    }

    double t0 = bench_now();
    for (int t = 0; t < T; t++) {
        pthread_t th;
        int e = pthread_create(&th, &detached, worker, &c[t]);
        if (e) bench_die("larson: pthread_create: %s", strerror(e));
    }
    pthread_mutex_lock(&done_mu);
    while (chains_done < T) pthread_cond_wait(&done_cv, &done_mu);
    pthread_mutex_unlock(&done_mu);
    double secs = bench_now() - t0;

    long long ops = 0;
    for (int t = 0; t < T; t++) {
        ops += c[t].ops_done;
        for (int i = 0; i < SLOTS; i++) free(c[t].slot[i]);
        free(c[t].slot);
        free(c[t].size);
    }
    free(c);
    bench_result("larson", ops, secs, " threads=%d rounds=%d", T, ROUNDS);
    return 0;
}
