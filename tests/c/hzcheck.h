/*
 * hzcheck.h - shared helpers for the hzgen C test programs:
 * deterministic PRNG, block stamping / verification, failure reporting.
 *
 * Stamp layout of a block of `size` bytes at address `addr` with a per-block
 * `cookie` (all words are accessed with memcpy, so any block alignment works):
 *   seed = mix(addr, size, cookie)
 *   if size >= HZ_HDR_MIN (24): word0 = size, word1 = cookie,
 *                               word2 = hz_hdr_check(seed)   (self-describing
 *                               header, lets another thread verify the block
 *                               knowing only its pointer)
 *   every other 8-byte word i = seed + i * HZ_K; trailing bytes (size % 8) are
 *   the low bytes of word (size / 8) of that sequence.
 */
#ifndef HZCHECK_H
#define HZCHECK_H

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define HZ_HDR_MIN 24
#define HZ_K 0x9E3779B97F4A7C15ULL

/* ---- failure reporting ------------------------------------------------- */

static const char *hz_prog = "hztest";
/* optional cleanup run by hz_fail before _exit (must be async-signal-safe) */
static void (*hz_fail_hook)(void);

__attribute__((format(printf, 1, 2), noreturn)) static inline void hz_fail(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n = snprintf(buf, sizeof buf, "%s: FAIL: ", hz_prog);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof buf) {
        va_start(ap, fmt);
        int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof buf - 1)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    /* a single write(2): no stdio locks, no malloc (heap may be corrupt) */
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
    if (hz_fail_hook)
        hz_fail_hook();
    _exit(1);
}

/* ---- PRNG: splitmix64 finalizer + xorshift64* -------------------------- */

typedef struct {
    uint64_t s;
} hz_rng;

static inline uint64_t hz_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline void hz_rng_seed(hz_rng *r, uint64_t seed)
{
    r->s = hz_mix64(seed + HZ_K);
    if (r->s == 0)
        r->s = 0x853c49e6748fea9bULL;
}

static inline uint64_t hz_rand(hz_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* uniform-ish in [lo, hi] */
static inline size_t hz_range(hz_rng *r, size_t lo, size_t hi)
{
    return lo + (size_t)(hz_rand(r) % (uint64_t)(hi - lo + 1));
}

/* ---- stamping ----------------------------------------------------------- */

static inline uint64_t hz_seed(uintptr_t addr, size_t size, uint64_t cookie)
{
    return hz_mix64((uint64_t)addr ^ hz_mix64((uint64_t)size * 0x100000001b3ULL ^ cookie));
}

static inline uint64_t hz_hdr_check(uint64_t seed)
{
    return hz_mix64(seed ^ 0x5bd1e9955bd1e995ULL);
}

static inline void hz_stamp(void *p, size_t size, uint64_t cookie)
{
    unsigned char *b = (unsigned char *)p;
    uint64_t seed = hz_seed((uintptr_t)p, size, cookie);
    size_t nw = size / 8, i = 0;
    if (size >= HZ_HDR_MIN) {
        uint64_t h[3] = {(uint64_t)size, cookie, hz_hdr_check(seed)};
        memcpy(b, h, sizeof h);
        i = 3;
    }
    uint64_t v = seed + (uint64_t)i * HZ_K;
    for (; i < nw; i++, v += HZ_K)
        memcpy(b + i * 8, &v, 8);
    for (size_t j = nw * 8; j < size; j++)
        b[j] = (unsigned char)(v >> (8 * (j - nw * 8)));
}

static inline uint64_t hz_expect_word(uint64_t seed, size_t size, uint64_t cookie, size_t i)
{
    if (size >= HZ_HDR_MIN && i < 3)
        return i == 0 ? (uint64_t)size : i == 1 ? cookie : hz_hdr_check(seed);
    return seed + (uint64_t)i * HZ_K;
}

/*
 * Check the first n bytes at p against the stamp layout of a block
 * (addr, size, cookie).  n <= size.  `addr` may differ from p (e.g. after a
 * realloc moved the block).  Returns (size_t)-1 if OK, else the offset of the
 * first bad byte (and its expected / found values).
 */
static inline size_t hz_check_prefix(const void *p, size_t n, uintptr_t addr, size_t size,
                                     uint64_t cookie, unsigned *exp_byte, unsigned *got_byte)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t seed = hz_seed(addr, size, cookie);
    size_t nw = n / 8, i = 0;
    uint64_t diff = 0;
    if (size >= HZ_HDR_MIN)
        for (; i < 3 && i < nw; i++) {
            uint64_t w;
            memcpy(&w, b + i * 8, 8);
            diff |= w ^ hz_expect_word(seed, size, cookie, i);
        }
    {
        uint64_t v = seed + (uint64_t)i * HZ_K;
        for (; i < nw; i++, v += HZ_K) { /* branch-free, vectorizable */
            uint64_t w;
            memcpy(&w, b + i * 8, 8);
            diff |= w ^ v;
        }
    }
    {
        uint64_t e = hz_expect_word(seed, size, cookie, nw);
        for (size_t j = nw * 8; j < n; j++)
            diff |= (uint64_t)(b[j] ^ (unsigned char)(e >> (8 * (j - nw * 8))));
    }
    if (diff == 0)
        return (size_t)-1;
    /* slow path: locate the first bad byte */
    for (size_t j = 0; j < n; j++) {
        uint64_t e = hz_expect_word(seed, size, cookie, j / 8);
        unsigned char eb = (unsigned char)(e >> (8 * (j % 8)));
        if (b[j] != eb) {
            *exp_byte = eb;
            *got_byte = b[j];
            return j;
        }
    }
    *exp_byte = *got_byte = 0;
    return 0; /* unreachable */
}

/* verify a whole block, failing loudly on mismatch */
static inline void hz_verify(const void *p, size_t size, uint64_t cookie, const char *what)
{
    unsigned eb, gb;
    size_t off = hz_check_prefix(p, size, (uintptr_t)p, size, cookie, &eb, &gb);
    if (off != (size_t)-1)
        hz_fail("heap corruption (%s): block %p size %zu cookie %016llx: byte at offset %zu is "
                "0x%02x, expected 0x%02x",
                what, p, size, (unsigned long long)cookie, off, gb, eb);
}

/*
 * For a block that carries the self-describing header (size >= HZ_HDR_MIN):
 * read size and cookie from it, validate the header, verify the whole block.
 */
static inline size_t hz_verify_hdr(const void *p, uint64_t *cookie_out, const char *what)
{
    uint64_t h[3];
    memcpy(h, p, sizeof h);
    uint64_t seed = hz_seed((uintptr_t)p, (size_t)h[0], h[1]);
    if (h[0] < HZ_HDR_MIN || h[2] != hz_hdr_check(seed))
        hz_fail("heap corruption (%s): handed-off block %p has a bad header "
                "[%016llx %016llx %016llx]",
                what, p, (unsigned long long)h[0], (unsigned long long)h[1],
                (unsigned long long)h[2]);
    hz_verify(p, (size_t)h[0], h[1], what);
    if (cookie_out)
        *cookie_out = h[1];
    return (size_t)h[0];
}

/* fail if the block is not all-zero (calloc) */
static inline void hz_verify_zero(const void *p, size_t size, const char *what)
{
    const unsigned char *b = (const unsigned char *)p;
    unsigned char acc = 0;
    for (size_t j = 0; j < size; j++)
        acc |= b[j];
    if (acc == 0)
        return;
    for (size_t j = 0; j < size; j++)
        if (b[j])
            hz_fail("%s: calloc block %p size %zu not zeroed: byte at offset %zu is 0x%02x", what,
                    p, size, j, b[j]);
}

/* ---- alignment ---------------------------------------------------------- */

/*
 * Minimum alignment a plain malloc(size) result must have: the fundamental
 * alignment (16 on x86-64 / aarch64) for size >= 16, otherwise the largest
 * power of two <= size (C17 DR 445 semantics; e.g. mimalloc returns 8-byte
 * aligned blocks for malloc(8)).
 */
#ifndef HZ_MIN_ALIGN
#define HZ_MIN_ALIGN 16
#endif
static inline size_t hz_min_align(size_t size)
{
    if (size >= HZ_MIN_ALIGN)
        return HZ_MIN_ALIGN;
    size_t a = 1;
    while (a * 2 <= size)
        a *= 2;
    return a;
}

static inline void hz_check_align(const void *p, size_t align, size_t size, const char *what)
{
    if (((uintptr_t)p & (align - 1)) != 0)
        hz_fail("%s: block %p (size %zu) is not %zu-byte aligned", what, p, size, align);
}

/* VmRSS of this process in KiB, or -1 (open/read: no allocation, no stdio; thread-self: once
 * main has exited by pthread_exit, /proc/self is its zombie's, with no VmRSS) */
static inline long hz_rss_kb(void)
{
    char buf[4096];
    int fd = open("/proc/thread-self/status", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *p = strstr(buf, "VmRSS:");
    return p ? strtol(p + 6, NULL, 10) : -1;
}

/* the address space this process has mapped (VmSize, what RLIMIT_AS counts), in bytes */
static inline size_t hz_mapped_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1) hz_fail("cannot read /proc/self/statm");
    fclose(f);
    return pages * 4096;
}

/* limit the address space (RLIMIT_AS) to `bytes` (RLIM_INFINITY: lift it) */
static inline void hz_limit_as(size_t bytes)
{
    struct rlimit lim = {.rlim_cur = bytes, .rlim_max = RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &lim)) hz_fail("setrlimit");
}

/* the calling process's threads (/proc/self/task): 2 once the allocator's purger runs */
static inline int hz_thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) hz_fail("cannot open /proc/self/task");
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

#endif /* HZCHECK_H */
