/* large_unmap.c - freeing large blocks does not unmap on the freeing thread once the purger runs.
 *
 * Starts the purger (64 MiB of small blocks allocated and freed, then an allocation), then
 * allocates and touches 40 blocks of 1 MiB and frees them: the large cache keeps some (at most
 * its cache_entries, 32 in default: a byte budget that follows the peak, large.peak_share,
 * would keep all 40 MiB), the rest (under the 64 MiB the purger may hold, so none falls back to
 * the freeing thread however late the purger is) is evicted. Run under tests/c/madvise_spy.c; prints
 * "large_unmap: main=M other=O" with
 * the munmap calls of 1 MiB or more made by the main thread and by other threads during the
 * frees (and 200 ms after them).
 */
#define _GNU_SOURCE
#include "hzalloc.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SMALL 65536
#define LARGE 40

static void *small[SMALL], *large[LARGE];

int main(void)
{
    volatile int *mmain = (volatile int *)dlsym(RTLD_DEFAULT, "hz_spy_munmap_main");
    volatile int *mother = (volatile int *)dlsym(RTLD_DEFAULT, "hz_spy_munmap_other");
    if (!mmain || !mother) { fprintf(stderr, "large_unmap: run me under madvise_spy.so\n"); return 2; }
    for (int i = 0; i < SMALL; i++) { small[i] = XMALLOC(1000); memset(small[i], 1, 1000); }
    for (int i = 0; i < SMALL; i++) XFREE(small[i]);
    for (int i = 0; i < LARGE; i++) { large[i] = XMALLOC((size_t)1 << 20); memset(large[i], 1, (size_t)1 << 20); }
    int main0 = *mmain, other0 = *mother;
    for (int i = 0; i < LARGE; i++) XFREE(large[i]);
    struct timespec nap = {0, 200000000L};
    nanosleep(&nap, NULL);
    printf("large_unmap: main=%d other=%d\n", *mmain - main0, *mother - other0);
    return 0;
}
