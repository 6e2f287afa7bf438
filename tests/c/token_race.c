/* token_race.c - two dead-owner scans meet on one heap (run behind tests/c/trylock_delay.c).
 *
 * A thread first allocates in the last round of pthread key destructors and dies holding its
 * heap's token; two threads run slow paths, so both scan, and the shim holds the first scan
 * that tries the marked token for 300 ms, long enough for the other to give the heap back.
 * Then thread C takes a robust mutex of the program's own, makes its first allocation (it
 * adopts that heap) and waits while the delayed scanner locks and unlocks a robust mutex of
 * its own; C exits holding the program's mutex, so the kernel must mark it: main's lock of it
 * gets EOWNERDEAD. (A scan that came back holding the abandoned heap's token made C re-make
 * a token that sat on the scanner's robust list, which then spliced C's list: the kernel never
 * reached the program's mutex and main's lock timed out.)
 * Prints "token_race: delayed=D owner_died=1" (D: the delayed trylock happened).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <time.h>

#include "hzcheck.h"

static pthread_key_t key;
static pthread_mutex_t program_mutex, scanner_mutex;   /* robust, the program's own */
static volatile int stop, adopted, scanner_done, finished;
static volatile int *delay_tid, *delay_result;
static void *volatile sink[2];   /* (kept: gcc drops a malloc whose block goes nowhere) */

static void destructor(void *v)
{
    long round = (long)v;
    if (round < PTHREAD_DESTRUCTOR_ITERATIONS) {
        pthread_setspecific(key, (void *)(round + 1));
        return;
    }
    sink[0] = memset(malloc(100), 1, 100);   /* the first allocation: our key is set too late */
}

static void *dies_late(void *arg)
{
    (void)arg;
    pthread_setspecific(key, (void *)1L);
    return NULL;
}

static void *scanner(void *arg)
{
    (void)arg;
    static __thread void *mine[4096];
    while (!stop) {                 /* bursts past the caches: slow paths, so scans */
        for (int i = 0; i < 4096; i++) mine[i] = malloc(48 + (size_t)(i % 7) * 100);
        for (int i = 0; i < 4096; i++) free(mine[i]);
    }
    if (gettid() == *delay_tid) {
        while (!adopted) usleep(1000);
        pthread_mutex_lock(&scanner_mutex);
        pthread_mutex_unlock(&scanner_mutex);
        scanner_done = 1;
    }
    while (!finished) usleep(1000);   /* alive until C is gone: C adopts the dead heap, not ours */
    return NULL;
}

static void *adopter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&program_mutex);     /* held until this thread dies */
    sink[1] = memset(malloc(100), 2, 100);  /* first allocation: adopts the dead thread's heap */
    adopted = 1;
    while (!scanner_done) usleep(1000);
    return NULL;
}

int main(void)
{
    hz_prog = "token_race";
    delay_tid = dlsym(RTLD_DEFAULT, "hz_delay_tid");
    delay_result = dlsym(RTLD_DEFAULT, "hz_delay_result");
    if (!delay_tid || !delay_result) hz_fail("run behind trylock_delay");
    pthread_key_create(&key, destructor);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&program_mutex, &a);
    pthread_mutex_init(&scanner_mutex, &a);
    free(malloc(10));
    pthread_t s[2], t;
    for (int i = 0; i < 2; i++) pthread_create(&s[i], NULL, scanner, NULL);
    pthread_create(&t, NULL, dies_late, NULL);
    pthread_join(t, NULL);
    for (int i = 0; i < 300 && *delay_result == -1; i++) usleep(10000);
    int delayed = *delay_result != -1;
    stop = 1;
    if (!delayed) scanner_done = 1;
    usleep(100000);
    pthread_create(&t, NULL, adopter, NULL);
    pthread_join(t, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 2;
    int e = pthread_mutex_timedlock(&program_mutex, &ts);
    finished = 1;
    for (int i = 0; i < 2; i++) pthread_join(s[i], NULL);
    printf("token_race: delayed=%d owner_died=%d\n", delayed, e == EOWNERDEAD);
    return 0;
}
