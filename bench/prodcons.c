/* prodcons: producer/consumer, every free is remote.
 *
 * T threads form T/2 producer->consumer pairs.  A producer allocates blocks
 * of 16..256 B, writes a tag into each and publishes them in batches of 64
 * pointers through a bounded lock-free single-producer/single-consumer ring
 * of batches; its consumer checks the tag and frees them.  Waiting (ring
 * full or empty) spins briefly, then yields, so that with more threads than
 * cores the run measures the allocator more than the scheduler.  The total
 * op count is fixed.  One op = one malloc (by the producer) + one free (by
 * the consumer).
 *
 *   prodcons -t THREADS [-s SCALE] [-n TOTAL_BLOCKS]
 */
#include "bench.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define BATCH 64
#define RING 32 /* batches in flight per pair */
#define DEFAULT_BLOCKS 12000000LL
#define SPINS 200

typedef struct {
    _Alignas(64) _Atomic uint64_t head; /* written by the producer */
    _Alignas(64) _Atomic uint64_t tail; /* written by the consumer */
    _Alignas(64) uint64_t *buf[RING][BATCH];
    long long batches;
    uint64_t seed;
    uintptr_t acc;
} pair_t;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void *producer(void *arg) {
    pair_t *q = arg;
    uint64_t head = 0, seed = q->seed;
    long long batches = q->batches;
    for (long long b = 0; b < batches; b++, head++) {
        int spins = 0;
        while (head - atomic_load_explicit(&q->tail, memory_order_acquire) >= RING) {
            if (++spins < SPINS) cpu_relax();
            else sched_yield();
        }
        uint64_t **slot = q->buf[head % RING];
        for (int i = 0; i < BATCH; i++) {
            size_t n = (size_t)bench_range(&seed, 16, 256);
            uint64_t *p = malloc(n);
            p[0] = (head << 8) | (uint64_t)i;
            ((char *)p)[n - 1] = 1;
            slot[i] = p;
        }
        atomic_store_explicit(&q->head, head + 1, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg) {
    pair_t *q = arg;
    uint64_t tail = 0;
    uintptr_t acc = 0;
    long long batches = q->batches;
    for (long long b = 0; b < batches; b++, tail++) {
        int spins = 0;
        while (atomic_load_explicit(&q->head, memory_order_acquire) == tail) {
            if (++spins < SPINS) cpu_relax();
            else sched_yield();
        }
        uint64_t **slot = q->buf[tail % RING];
        for (int i = 0; i < BATCH; i++) {
            uint64_t *p = slot[i];
            if (p[0] != ((tail << 8) | (uint64_t)i)) bench_die("prodcons: block content corrupted");
            acc += (uintptr_t)p[0];
            free(p);
        }
        atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
    }
    q->acc = acc;
    return NULL;
}

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 2, 0, "  prodcons: -t THREADS (even), -n TOTAL_BLOCKS");
    int pairs = o.threads / 2;
    if (pairs < 1) pairs = 1;
    long long blocks = o.count > 0 ? o.count : bench_scaled(DEFAULT_BLOCKS, o.scale, BATCH * pairs);
    long long batches = blocks / BATCH / pairs;
    if (batches < 1) batches = 1;

    pair_t *q = aligned_alloc(64, sizeof(pair_t) * (size_t)pairs);
    if (!q) bench_die("prodcons: out of memory");
    memset(q, 0, sizeof(pair_t) * (size_t)pairs);
    pthread_t *th = bench_malloc_checked(sizeof(pthread_t) * 2 * (size_t)pairs);

    double t0 = bench_now();
    for (int i = 0; i < pairs; i++) {
        q[i].batches = batches;
        q[i].seed = 0xb00 + (uint64_t)i * 104729;
        if (pthread_create(&th[2 * i], NULL, consumer, &q[i]) ||
            pthread_create(&th[2 * i + 1], NULL, producer, &q[i]))
            bench_die("prodcons: pthread_create failed");
    }
    uintptr_t acc = 0;
    for (int i = 0; i < 2 * pairs; i++) pthread_join(th[i], NULL);
    double secs = bench_now() - t0;
    for (int i = 0; i < pairs; i++) acc += q[i].acc;
    bench_sink = acc;
    free(th);
    free(q);
    bench_result("prodcons", batches * BATCH * pairs, secs, " threads=%d batch=%d", 2 * pairs, BATCH);
    return 0;
}
