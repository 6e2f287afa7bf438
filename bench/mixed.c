/* mixed: random sizes 16..1040 B, working set of 1000 slots, each op frees
 * a random slot and refills it.  One op = one malloc+free pair.
 * The first word of every block holds a tag that is checked before free. */
#include "bench.h"

#define SLOTS 1000
#define DEFAULT_OPS 20000000LL

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 1, 0, "  mixed: -n OPS");
    long long ops = o.count > 0 ? o.count : bench_scaled(DEFAULT_OPS, o.scale, 1000);
    uint64_t seed = 0x31337;
    uint64_t *slot[SLOTS];
    size_t sz[SLOTS];

    double t0 = bench_now();
    for (int i = 0; i < SLOTS; i++) {
        size_t n = (size_t)bench_range(&seed, 16, 1040);
        uint64_t *p = bench_malloc_checked(n);
        p[0] = (uint64_t)i ^ n;
        ((char *)p)[n - 1] = 1;
        slot[i] = p;
        sz[i] = n;
    }
    for (long long k = 0; k < ops; k++) {
        uint64_t r = bench_rng(&seed);
        unsigned i = (unsigned)(r % SLOTS);
        size_t n = 16 + (size_t)((r >> 32) % 1025);
        uint64_t *p = slot[i];
        if (p[0] != ((uint64_t)i ^ sz[i])) bench_die("mixed: block content corrupted");
        free(p);
        p = malloc(n);
        p[0] = (uint64_t)i ^ n;
        ((char *)p)[n - 1] = 1;
        slot[i] = p;
        sz[i] = n;
    }
    for (int i = 0; i < SLOTS; i++) free(slot[i]);
    double secs = bench_now() - t0;
    bench_result("mixed", ops, secs, NULL);
    return 0;
}
