/* tiny: fixed-size malloc/free fast path.
 *
 * A working set of 128 slots is filled with malloc(SIZE) and then emptied,
 * alternately in LIFO order and in a random (pre-computed) permutation.
 * One op = one malloc+free pair.
 *
 *   tiny -z SIZE [-s SCALE]      timed run (default size 16)
 *   tiny -z SIZE -n PAIRS        exactly PAIRS pairs (rounded down to a
 *                                multiple of 128); for `perf stat`: the
 *                                difference between runs with N and 2N pairs
 *                                divided by N is the cost of one pair.
 */
#include "bench.h"

#define SLOTS 128
#define NPERM 16
#define DEFAULT_PAIRS 24000000LL

static unsigned char perm[NPERM][SLOTS];

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 1, 16, "  tiny: -z SIZE (bytes), -n PAIRS");
    size_t size = (size_t)o.size;
    long long pairs = o.count > 0 ? o.count : bench_scaled(DEFAULT_PAIRS, o.scale, SLOTS);
    long long rounds = pairs / SLOTS;
    void *slot[SLOTS];
    uint64_t seed = 0x7151 + size;
    uintptr_t acc = 0;

    if (rounds < 1) rounds = 1;
    for (int p = 0; p < NPERM; p++) {
        for (int i = 0; i < SLOTS; i++) perm[p][i] = (unsigned char)i;
        for (int i = SLOTS - 1; i > 0; i--) {
            int j = (int)(bench_rng(&seed) % (uint64_t)(i + 1));
            unsigned char t = perm[p][i];
            perm[p][i] = perm[p][j];
            perm[p][j] = t;
        }
    }

    double t0 = bench_now();
    for (long long r = 0; r < rounds; r++) {
        for (int i = 0; i < SLOTS; i++) {
            char *p = malloc(size);
            p[0] = (char)i;           /* touch first and last byte */
            p[size - 1] = (char)r;
            slot[i] = p;
        }
        if (r & 1) {
            const unsigned char *pm = perm[(r >> 1) & (NPERM - 1)];
            for (int i = 0; i < SLOTS; i++) {
                char *p = slot[pm[i]];
                acc += (unsigned char)p[0];
                free(p);
            }
        } else {
            for (int i = SLOTS - 1; i >= 0; i--) {
                char *p = slot[i];
                acc += (unsigned char)p[0];
                free(p);
            }
        }
    }
    double secs = bench_now() - t0;
    bench_sink = acc;
    bench_result("tiny", rounds * SLOTS, secs, " size=%zu", size);
    return 0;
}
