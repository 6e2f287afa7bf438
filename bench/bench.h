/* Shared helpers for the hzgen benchmark workloads (header-only).
 *
 * Every workload is a standalone program that only uses plain
 * malloc/free/realloc, so it can be run under LD_PRELOAD of any allocator.
 * Each prints exactly one line on stdout:
 *
 *   RESULT name=<workload> ops=<N> seconds=<float> ops_per_sec=<float> [key=value ...]
 *
 * Common options (getopt):
 *   -s SCALE    multiply the default amount of work (float, default 1.0)
 *   -t THREADS  thread count (workloads that use threads)
 *   -z SIZE     object size (tiny)
 *   -n COUNT    exact operation count, overriding the scaled default
 *   -h          usage
 */
#ifndef HZGEN_BENCH_H
#define HZGEN_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#define BENCH_UNUSED __attribute__((unused))
#define BENCH_NOINLINE __attribute__((noinline))

/* Everything that is read from allocated memory ends up here, so the
 * compiler can neither drop the malloc/free pairs nor the memory touches. */
static volatile uintptr_t bench_sink BENCH_UNUSED;

typedef struct {
    double scale;
    int threads;
    long size;
    long long count; /* -1: not given */
} bench_opts;

static BENCH_UNUSED double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64: small, fast, good enough for picking sizes and slots. */
static inline uint64_t bench_rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform integer in [lo, hi] (inclusive). */
static inline uint64_t bench_range(uint64_t *s, uint64_t lo, uint64_t hi) {
    return lo + bench_rng(s) % (hi - lo + 1);
}

/* Roughly log-uniform integer in [lo, hi]: pick a power-of-two bucket
 * uniformly, then a uniform value inside it. */
static BENCH_UNUSED uint64_t bench_logrange(uint64_t *s, uint64_t lo, uint64_t hi) {
    int blo = 63 - __builtin_clzll(lo), bhi = 63 - __builtin_clzll(hi);
    int b = blo + (int)(bench_rng(s) % (uint64_t)(bhi - blo + 1));
    uint64_t a = (uint64_t)1 << b, z = a * 2 - 1;
    if (a < lo) a = lo;
    if (z > hi) z = hi;
    return bench_range(s, a, z);
}

static BENCH_UNUSED long long bench_scaled(long long base, double scale, long long min) {
    double v = (double)base * scale;
    long long r = (long long)v;
    return r < min ? min : r;
}

static BENCH_UNUSED void bench_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(3);
}

static BENCH_UNUSED void *bench_malloc_checked(size_t n) {
    void *p = malloc(n);
    if (!p) bench_die("malloc(%zu) returned NULL", n);
    return p;
}

static BENCH_UNUSED void bench_usage(const char *prog, const char *extra) {
    fprintf(stderr,
            "usage: %s [-s SCALE] [-t THREADS] [-z SIZE] [-n COUNT]\n%s%s",
            prog, extra ? extra : "", extra ? "\n" : "");
}

static BENCH_UNUSED bench_opts bench_parse(int argc, char **argv, int def_threads,
                                           long def_size, const char *extra) {
    bench_opts o = {1.0, def_threads, def_size, -1};
    int c;
    char *end;
    while ((c = getopt(argc, argv, "s:t:z:n:h")) != -1) {
        switch (c) {
        case 's':
            o.scale = strtod(optarg, &end);
            if (*end || !(o.scale > 0)) goto bad;
            break;
        case 't':
            o.threads = (int)strtol(optarg, &end, 10);
            if (*end || o.threads < 1 || o.threads > 1024) goto bad;
            break;
        case 'z':
            o.size = strtol(optarg, &end, 10);
            if (*end || o.size < 1) goto bad;
            break;
        case 'n':
            o.count = strtoll(optarg, &end, 10);
            if (*end || o.count < 1) goto bad;
            break;
        case 'h':
            bench_usage(argv[0], extra);
            exit(0);
        default:
            goto bad;
        }
    }
    /* A bare positional number is accepted as the scale, too. */
    if (optind < argc) {
        o.scale = strtod(argv[optind], &end);
        if (*end || !(o.scale > 0)) goto bad;
    }
    return o;
bad:
    bench_usage(argv[0], extra);
    exit(2);
}

/* Value in kB of a "Key:" line of a /proc file such as /proc/self/status
 * (VmRSS, VmHWM) or /proc/self/smaps_rollup (LazyFree), or -1. */
static BENCH_UNUSED long bench_proc_kb(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    char line[256];
    size_t kl = strlen(key);
    long v = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static BENCH_UNUSED long bench_status_kb(const char *key) {
    return bench_proc_kb("/proc/self/status", key);
}

/* Print the RESULT line. `extra` is an optional printf format for
 * additional " key=value" fields (must start with a space).  cpu_seconds
 * (user+system time of the whole process) is always added: compared with
 * seconds it shows whether threads were starved of CPU. */
static BENCH_UNUSED void bench_result(const char *name, long long ops, double secs,
                                      const char *extra, ...) {
    char buf[512] = "";
    if (extra) {
        va_list ap;
        va_start(ap, extra);
        vsnprintf(buf, sizeof buf, extra, ap);
        va_end(ap);
    }
    struct rusage ru;
    double cpu = -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    if (secs <= 0) secs = 1e-9;
    printf("RESULT name=%s ops=%lld seconds=%.6f ops_per_sec=%.1f%s cpu_seconds=%.3f\n", name, ops,
           secs, (double)ops / secs, buf, cpu);
    fflush(stdout);
}

#endif
