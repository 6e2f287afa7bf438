/* one_thread.c - pthread_create under a spec with threads: false is refused (EAGAIN, a message on
 * stderr once) instead of two threads sharing its unlocked heap; under any other spec it works.
 * Prints "one_thread: rc=A,B" (the two pthread_create results), then allocates on. */
#include "hzalloc.h"
#include "hzcheck.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *worker(void *arg)
{
    void *p = XMALLOC(100);
    if (!p) hz_fail("out of memory");
    XFREE(p);
    return arg;
}

int main(void)
{
    hz_prog = "one_thread";
    int rc[2];
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        rc[i] = pthread_create(&t, NULL, worker, NULL);
        if (!rc[i] && pthread_join(t, NULL)) hz_fail("pthread_join failed");
    }
    printf("one_thread: rc=%d,%d\n", rc[0], rc[1]);
    for (int i = 0; i < 1000; i++) {
        char *p = XMALLOC(64 + (size_t)i);
        if (!p) hz_fail("out of memory");
        memset(p, i, 64 + (size_t)i);
        XFREE(p);
    }
    return 0;
}
