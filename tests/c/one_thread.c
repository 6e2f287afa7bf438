/* one_thread.c - pthread_create under a spec with threads: false is refused (EAGAIN, a message on
 * stderr once) instead of two threads sharing its unlocked heap; under any other spec it works.
 * Prints "one_thread: rc=A,B thrd=C" (two pthread_create results, then thrd_create's), then
 * allocates on. */
#include "hzalloc.h"
#include "hzcheck.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <threads.h>

static void *worker(void *arg)
{
    void *p = XMALLOC(100);
    if (!p) hz_fail("out of memory");
    XFREE(p);
    return arg;
}

static int c11_worker(void *arg)
{
    return worker(arg) != NULL;
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
    thrd_t c11;
    int c11_rc = thrd_create(&c11, c11_worker, NULL);   /* C11's (thrd_nomem: 3) */
    if (c11_rc == thrd_success && thrd_join(c11, NULL) != thrd_success) hz_fail("thrd_join failed");
    printf("one_thread: rc=%d,%d thrd=%d\n", rc[0], rc[1], c11_rc);
    for (int i = 0; i < 1000; i++) {
        char *p = XMALLOC(64 + (size_t)i);
        if (!p) hz_fail("out of memory");
        memset(p, i, 64 + (size_t)i);
        XFREE(p);
    }
    return 0;
}
