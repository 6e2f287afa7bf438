/* pexit.c - a program whose main thread ends by pthread_exit ends when its last thread does.
 *
 *   pexit first : main calls pthread_exit while a worker still runs (the worker is the last)
 *   pexit last  : the worker has exited when main calls pthread_exit (main is the last)
 *   pexit freer : the worker, which never allocates (no heap of its own), frees the 96 MiB
 *                 after main's pthread_exit and reports, 1.5 s later, "pexit freer:
 *                 rss_before_kb=A rss_after_kb=B" (the purger still returns them)
 *
 * Before that, 96 MiB of 4..16 KiB blocks are allocated and freed, and a worker allocates: with
 * backing.purge_thread that starts the purger, whose thread must not keep the process alive
 * once the program's threads are gone (the kernel ends a process at its last thread's exit;
 * before the fix it ran on, blocked in the purger's sleep, immune to SIGTERM). Prints
 * "pexit: threads=N" (the process's threads before main's exit, the purger's included); the
 * caller runs it with a timeout.
 */
#include "hzalloc.h"
#include "hzcheck.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BLOCKS 9830                 /* x 4..16 KiB, ~96 MiB */

static void *blocks[BLOCKS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int worker_ready;
static int freer_mode;


static void nap_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void *worker(void *arg)
{
    long linger_ms = (long)(intptr_t)arg;
    void *p = XMALLOC(3000);          /* a heap, and an allocation miss: the purger starts */
    if (!p) hz_fail("out of memory");
    memset(p, 1, 3000);
    XFREE(p);
    pthread_mutex_lock(&mu);
    worker_ready = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    nap_ms(linger_ms);
    return NULL;
}

static int threads_now(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* the last thread: frees what main allocated (a thread without a heap: no malloc, no stdio) */
static void *freer(void *arg)
{
    (void)arg;
    nap_ms(200);                      /* main has exited */
    long before = hz_rss_kb();
    for (int i = 0; i < BLOCKS; i++) XFREE(blocks[i]);
    nap_ms(1500);
    char line[128];
    int n = snprintf(line, sizeof line, "pexit freer: rss_before_kb=%ld rss_after_kb=%ld\n",
                     before, hz_rss_kb());
    if (write(1, line, (size_t)n) != n) _exit(1);
    return NULL;
}

int main(int argc, char **argv)
{
    hz_prog = "pexit";
    int main_first = argc > 1 && !strcmp(argv[1], "first");
    freer_mode = argc > 1 && !strcmp(argv[1], "freer");
    unsigned seed = 12345;
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = XMALLOC(4096 + (size_t)rand_r(&seed) % 12289);
        if (!blocks[i]) hz_fail("out of memory");
        memset(blocks[i], 0x5a, 4096);
    }
    if (!freer_mode)
        for (int i = 0; i < BLOCKS; i++) XFREE(blocks[i]);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, worker, (void *)(intptr_t)(main_first ? 300 : 0)))
        hz_fail("pthread_create failed");
    pthread_mutex_lock(&mu);
    while (!worker_ready) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    nap_ms(50);                       /* the purger has started (or not: no purge_thread) */
    printf("pexit: threads=%d\n", threads_now());
    fflush(stdout);
    if (!main_first && !freer_mode) nap_ms(200);     /* the worker is gone */
    if (freer_mode && pthread_create(&t, &attr, freer, NULL)) hz_fail("pthread_create failed");
    pthread_exit(NULL);
}
