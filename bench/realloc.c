/* realloc: realloc-heavy growth.
 *
 * 48 buffers are live at once.  Each starts at 16 B (malloc) and grows
 * step by step with realloc towards a random target size, then is freed and
 * replaced by a fresh one.  Growth policies:
 *   - doubling, target 4 KiB .. 1 MiB (log-uniform)
 *   - x1.5,     target 4 KiB .. 1 MiB (log-uniform)
 *   - +N bytes (N random 16..4096 per step), target 1 KiB .. 128 KiB
 * Each step picks a random live buffer, so growths are interleaved.  After
 * every realloc the preserved prefix is checked (first and last old byte)
 * and the new part is written once per page and at its last byte.
 * One op = one realloc call (buffer creation and free are not counted).
 *
 *   realloc [-s SCALE] [-n REALLOCS]
 */
#include "bench.h"

#define LIVE 48
#define DEFAULT_REALLOCS 500000LL
#define PAGE 4096

typedef struct {
    unsigned char *p;
    size_t size, target;
    int policy;
    unsigned char tag;
} buf_t;

static void start(buf_t *b, uint64_t *seed) {
    b->policy = (int)(bench_rng(seed) % 3);
    b->target = b->policy == 2 ? (size_t)bench_logrange(seed, 1024, 128 * 1024)
                               : (size_t)bench_logrange(seed, 4096, 1024 * 1024);
    b->size = 16;
    b->tag = (unsigned char)bench_rng(seed);
    b->p = bench_malloc_checked(16);
    memset(b->p, b->tag, 16);
}

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 1, 0, "  realloc: -n REALLOCS");
    long long reallocs = o.count > 0 ? o.count : bench_scaled(DEFAULT_REALLOCS, o.scale, 100);
    uint64_t seed = 0x4ea110c;
    buf_t b[LIVE];
    long long frees = 0;

    double t0 = bench_now();
    for (int i = 0; i < LIVE; i++) start(&b[i], &seed);
    for (long long k = 0; k < reallocs; k++) {
        uint64_t r = bench_rng(&seed);
        buf_t *x = &b[r % LIVE];
        size_t old = x->size, n;
        switch (x->policy) {
        case 0: n = old * 2; break;
        case 1: n = old + old / 2; break;
        default: n = old + 16 + (size_t)((r >> 32) % 4081); break;
        }
        unsigned char *p = realloc(x->p, n);
        if (!p) bench_die("realloc(%zu) returned NULL", n);
        if (p[0] != x->tag || p[old - 1] != x->tag) bench_die("realloc: contents not preserved");
        for (size_t off = old; off < n; off += PAGE) p[off] = x->tag;
        p[n - 1] = x->tag;
        x->p = p;
        x->size = n;
        if (n >= x->target) {
            bench_sink += p[n / 2];
            free(p);
            frees++;
            start(x, &seed);
        }
    }
    for (int i = 0; i < LIVE; i++) free(b[i].p);
    double secs = bench_now() - t0;
    bench_result("realloc", reallocs, secs, " buffers_completed=%lld", frees);
    return 0;
}
