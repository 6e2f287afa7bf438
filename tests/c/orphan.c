/* orphan.c - memory that other threads' heaps hold must come back.
 *
 *   orphan dead   : a producer thread allocates 64 MiB of 64 B blocks and exits; main frees
 *                   them (remote frees into the dead thread's heap) and calls malloc_trim.
 *   orphan idle   : main allocates 16 MiB of 64 KiB blocks; a thread frees them all (remote
 *                   frees batched in its outbox) and then sleeps; main calls malloc_trim.
 *
 * Prints "orphan MODE: rss_peak_kb=A rss_after_kb=B" (VmRSS) and exits 0; the caller bounds B.
 */
#include "hzalloc.h"
#include "hzcheck.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEAD_BLOCKS (1L << 20)      /* x 64 B = 64 MiB */
#define IDLE_BLOCKS 256             /* x 64 KiB = 16 MiB */

extern int malloc_trim(size_t);
static void **blocks;
static volatile int freed;

static void *producer(void *arg)
{
    (void)arg;
    for (long i = 0; i < DEAD_BLOCKS; i++) {
        blocks[i] = XMALLOC(64);
        memset(blocks[i], 0x5a, 64);
    }
    return NULL;
}

static void *idle_freer(void *arg)
{
    (void)arg;
    void *mine = XMALLOC(16);       /* a heap of its own, hence an outbox */
    for (long i = 0; i < IDLE_BLOCKS; i++) XFREE(blocks[i]);
    freed = 1;
    sleep(2);                       /* a pool thread waiting for work */
    XFREE(mine);
    return NULL;
}

int main(int argc, char **argv)
{
    int dead = argc > 1 && !strcmp(argv[1], "dead");
    long peak;
    pthread_t t;
    blocks = calloc(DEAD_BLOCKS, sizeof *blocks);    /* the test's own array: libc's calloc */
    if (!blocks) return 1;
    if (dead) {
        pthread_create(&t, NULL, producer, NULL);
        pthread_join(t, NULL);
        peak = hz_rss_kb();
        for (long i = 0; i < DEAD_BLOCKS; i++) XFREE(blocks[i]);
    } else {
        for (long i = 0; i < IDLE_BLOCKS; i++) {
            blocks[i] = XMALLOC(65536);
            memset(blocks[i], 0x5a, 65536);
        }
        peak = hz_rss_kb();
        pthread_create(&t, NULL, idle_freer, NULL);
        while (!freed) usleep(1000);
    }
    malloc_trim(0);
    printf("orphan %s: rss_peak_kb=%ld rss_after_kb=%ld\n", dead ? "dead" : "idle", peak, hz_rss_kb());
    if (!dead) pthread_join(t, NULL);
    return 0;
}
