/* large_churn.c - mappings handed to the purger do not pile up while it naps.
 *
 * Leaves dirty slabs behind (so the purger sleeps on a timer, not idle), then allocates,
 * touches and frees a 40 MiB block 40 times. Each free hands the mapping to the purger; its nap
 * must end at once. Prints "large_churn: peak_rss_kb=P" (VmRSS, sampled after every round).
 */
#include "hzalloc.h"
#include "hzcheck.h"

#include <stdio.h>
#include <string.h>

#define SMALL 70000
#define BIG ((size_t)40 << 20)

static void *small[SMALL];

int main(void)
{
    for (int i = 0; i < SMALL; i++) { small[i] = XMALLOC(1000); memset(small[i], 1, 1000); }
    for (int i = 0; i < SMALL / 2; i++) XFREE(small[i]);          /* empty slabs: dirty units */
    for (int i = 0; i < 2000; i++) small[i] = XMALLOC(3000);      /* misses: the purger starts */
    long peak = 0;
    for (int r = 0; r < 40; r++) {
        char *p = XMALLOC(BIG);
        if (!p) return 1;
        memset(p, r, BIG);
        __asm__ volatile("" : : "r"(p) : "memory");              /* keep the pair */
        XFREE(p);
        long rss = hz_rss_kb();
        if (rss > peak) peak = rss;
    }
    printf("large_churn: peak_rss_kb=%ld\n", peak);
    return 0;
}
