/* purge_unlocked.c - allocations do not wait while the purger gives memory back.
 *
 * Frees 384 MiB of 64 KiB blocks, then for up to 3 s allocates 1000 B blocks (a new slab every
 * 64 of them) and counts the allocations that began and ended while the purger was inside a
 * madvise call (run under tests/c/madvise_spy.c, which makes those calls last 300 ms and says
 * when one is in progress): with the lock held across the call, at most a slab's worth (64)
 * get through before one needs the slab layer and waits. Prints "purge_unlocked: during=N
 * spied=S child=C" (S: madvise calls seen), and stops once N reaches 2000. Half-way it forks
 * (the purger is still inside its call then): the child, whose allocator has no purger and
 * a round of runs nobody will finish, allocates, checks and frees 384 MiB; C is its status.
 *
 * `purge_unlocked thread`: for specs that return an empty slab's pages at once
 * (backing.release: immediate): a second thread allocates the 64 KiB blocks and frees them
 * meanwhile (its own blocks: local frees), so that its slab releases madvise (slowed by the spy:
 * run it with HZ_SPY_MIN_LEN at most a slab) while the main thread allocates; it stops when the
 * main thread is done.
 */
#define _GNU_SOURCE
#include "hzalloc.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BIG 6144
#define KEEP 200000

static void *big[BIG], *keep[KEEP];

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* fork; the child churns through the memory its parent's purger was returning */
static int fork_and_churn(void)
{
    pid_t pid = fork();
    if (pid < 0) return -2;
    if (pid == 0) {
        for (int round = 0; round < 2; round++) {
            for (int i = 0; i < BIG; i++) {
                big[i] = XMALLOC(65536);
                if (!big[i]) _exit(3);
                memset(big[i], i & 0xff, 65536);
            }
            for (int i = 0; i < BIG; i++) {
                if (((unsigned char *)big[i])[65535] != (i & 0xff)) _exit(4);
                XFREE(big[i]);
            }
        }
        _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) return -3;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static volatile int stop, ready;
static int freed;                      /* big[] blocks the freeing thread has freed */

static void fill_big(void)
{
    for (int i = 0; i < BIG; i++) { big[i] = XMALLOC(65536); memset(big[i], 1, 65536); }
}

static void *free_big(void *arg)
{
    (void)arg;
    fill_big();
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    while (freed < BIG && !stop) XFREE(big[freed++]);
    return NULL;
}

int main(int argc, char **argv)
{
    volatile int *spy = (volatile int *)dlsym(RTLD_DEFAULT, "hz_spy_in_madvise");
    if (!spy) { fprintf(stderr, "purge_unlocked: run me under madvise_spy.so\n"); return 2; }
    int threaded = argc > 1 && !strcmp(argv[1], "thread");
    pthread_t freer;
    if (threaded) {
        if (pthread_create(&freer, NULL, free_big, NULL)) return 3;
        while (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) { struct timespec nap = {0, 1000000}; nanosleep(&nap, NULL); }
    } else {
        fill_big();
        for (int i = 0; i < BIG; i++) XFREE(big[i]);
    }
    long during = 0, spied = 0, n = 0;
    int child = -1;
    int was = 0;
    double t0 = now();
    while (now() - t0 < 3.0 && n < KEEP && during < 2000) {
        int before = *spy;
        keep[n] = XMALLOC(1000);
        ((char *)keep[n++])[0] = 1;
        if (before && *spy && ++during == 1000) child = fork_and_churn();
        if (before && !was) spied++;
        was = before;
        if (n % 64 == 0) { struct timespec nap = {0, 200000}; nanosleep(&nap, NULL); }
    }
    printf("purge_unlocked: during=%ld spied=%ld child=%d\n", during, spied, child);
    if (threaded) {
        stop = 1;
        pthread_join(freer, NULL);
        for (int i = freed; i < BIG; i++) XFREE(big[i]);
    }
    for (long i = 0; i < n; i++) XFREE(keep[i]);
    return 0;
}
