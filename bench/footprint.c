/* footprint: memory footprint and return of memory to the OS.
 *
 * 1. allocate ~300 MiB in mixed sizes (64 B..64 KiB log-uniform, plus about
 *    one block in 512 of 256 KiB..4 MiB), writing every page;
 * 2. free every other block (fragmentation);
 * 3. allocate the freed volume again (fresh random sizes, same mix);
 * 4. free everything;
 * 5. ~2 s of light activity: small malloc/free bursts with 20 ms naps, which
 *    gives allocators that purge lazily/on a timer a chance to do so.
 *
 * Reports ops/s of phases 1-4 (one op = one malloc+free pair), the time and the page faults
 * (getrusage minflt) of each of those phases (pN_ms, pN_faults), and
 *   rss_peak_kb        VmHWM (peak RSS)
 *   rss_at_free_kb     VmRSS right after phase 4
 *   rss_after_free_kb  VmRSS at the end of phase 5
 *   lazyfree_kb        the part of rss_after_free_kb that was given back
 *                      with MADV_FREE (still counted in RSS until the kernel
 *                      needs the memory; -1 if the kernel does not say)
 *
 *   footprint [-s SCALE] [-n TOTAL_MIB]
 * SCALE multiplies both the volume and the light-activity time
 * (the latter is clamped to 0.05 .. 2 s).
 */
#include "bench.h"
#include <sys/resource.h>

#define PAGE 4096
#define DEFAULT_MIB 300LL
#define LIGHT_SECONDS 2.0
#define NAP_NS 20000000L

typedef struct {
    uint64_t *p;
    size_t n;
} blk_t;

static long minor_faults(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : -1;
}

static size_t pick_size(uint64_t *seed) {
    if (bench_rng(seed) % 512 == 0) return (size_t)bench_logrange(seed, 256 * 1024, 4 * 1024 * 1024);
    return (size_t)bench_logrange(seed, 64, 64 * 1024);
}

static void fill(blk_t *b, size_t n, uint64_t tag) {
    char *p = bench_malloc_checked(n);
    for (size_t off = 0; off < n; off += PAGE) p[off] = 1;
    p[n - 1] = 1;
    ((uint64_t *)p)[0] = tag;
    b->p = (uint64_t *)p;
    b->n = n;
}

static void release(blk_t *b, uint64_t tag) {
    if (b->p[0] != tag) bench_die("footprint: block content corrupted");
    free(b->p);
    b->p = NULL;
}

int main(int argc, char **argv) {
    bench_opts o = bench_parse(argc, argv, 1, 0, "  footprint: -n TOTAL_MIB");
    long long total = (o.count > 0 ? o.count : 0) * 1024 * 1024;
    if (total <= 0) total = bench_scaled(DEFAULT_MIB * 1024 * 1024, o.scale, 1024 * 1024);
    double light = LIGHT_SECONDS * o.scale;
    if (light > LIGHT_SECONDS) light = LIGHT_SECONDS;
    if (light < 0.05) light = 0.05;
    uint64_t seed = 0xf007;

    size_t cap = 1024, nb = 0;
    blk_t *b = bench_malloc_checked(cap * sizeof(blk_t));
    long long ops = 0;

    double t[5];
    long f[5];
    f[0] = minor_faults();
    double t0 = t[0] = bench_now();
    /* 1. allocate ~total bytes */
    long long bytes = 0;
    while (bytes < total) {
        if (nb == cap) {
            cap *= 2;
            b = realloc(b, cap * sizeof(blk_t));
            if (!b) bench_die("footprint: out of memory");
        }
        size_t n = pick_size(&seed);
        fill(&b[nb], n, (uint64_t)nb);
        bytes += (long long)n;
        nb++;
        ops++;
    }
    t[1] = bench_now(), f[1] = minor_faults();
    /* 2. free every other block */
    for (size_t i = 0; i < nb; i += 2) release(&b[i], (uint64_t)i);
    t[2] = bench_now(), f[2] = minor_faults();
    /* 3. allocate again into the holes */
    for (size_t i = 0; i < nb; i += 2) {
        fill(&b[i], pick_size(&seed), (uint64_t)i ^ 0x55);
        ops++;
    }
    t[3] = bench_now(), f[3] = minor_faults();
    /* 4. free everything */
    for (size_t i = 0; i < nb; i++) release(&b[i], (uint64_t)i ^ ((i & 1) ? 0 : 0x55));
    double secs = (t[4] = bench_now()) - t0;
    f[4] = minor_faults();
    free(b);
    long rss_at_free = bench_status_kb("VmRSS");

    /* 5. light activity */
    double end = bench_now() + light;
    long long light_ops = 0;
    uint64_t *ws[16] = {0};
    while (bench_now() < end) {
        for (int k = 0; k < 256; k++) {
            int i = k & 15;
            free(ws[i]);
            ws[i] = bench_malloc_checked((size_t)bench_range(&seed, 16, 256));
            ws[i][0] = (uint64_t)k;
            light_ops++;
        }
        struct timespec nap = {0, NAP_NS};
        nanosleep(&nap, NULL);
    }
    for (int i = 0; i < 16; i++) free(ws[i]);

    long rss_after = bench_status_kb("VmRSS");
    long hwm = bench_status_kb("VmHWM");
    long lazy = bench_proc_kb("/proc/self/smaps_rollup", "LazyFree");
    bench_result("footprint", ops, secs,
                 " rss_peak_kb=%ld rss_at_free_kb=%ld rss_after_free_kb=%ld lazyfree_kb=%ld"
                 " allocated_mib=%lld light_ops=%lld"
                 " p1_ms=%.1f p2_ms=%.1f p3_ms=%.1f p4_ms=%.1f"
                 " p1_faults=%ld p2_faults=%ld p3_faults=%ld p4_faults=%ld",
                 hwm, rss_at_free, rss_after, lazy, total / (1024 * 1024), light_ops,
                 (t[1] - t[0]) * 1e3, (t[2] - t[1]) * 1e3, (t[3] - t[2]) * 1e3, (t[4] - t[3]) * 1e3,
                 f[1] - f[0], f[2] - f[1], f[3] - f[2], f[4] - f[3]);
    return 0;
}
