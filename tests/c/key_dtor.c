/* key_dtor.c - threads whose pthread key destructor allocates, after the allocator's own
 * thread-exit hook has run (glibc runs its per-thread destructor list before the key
 * destructors). Run behind key_hog.so the allocator has no key and uses that list; this
 * program gives one hog key back for itself. Each of N threads (one at a time) allocates,
 * exits, and its destructor mallocs and frees; prints "key_dtor: runs=R rss_start_kb=A
 * rss_end_kb=B" (B after malloc_trim): a heap taken in the destructor must come back. */
#include "hzcheck.h"

#include <malloc.h>
#include <pthread.h>

static pthread_key_t key;
static int runs;

static void destructor(void *p)
{
    __atomic_add_fetch(&runs, 1, __ATOMIC_RELAXED);
    free(p);
    void *volatile q = malloc(64);   /* a fresh allocation after the thread's exit hook */
    free(q);
}

static void *thread_main(void *arg)
{
    (void)arg;
    pthread_setspecific(key, malloc(100));
    void *v[64];
    for (int i = 0; i < 64; i++) v[i] = malloc(1000);
    for (int i = 0; i < 64; i++) free(v[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    hz_prog = "key_dtor";
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    if (pthread_key_create(&key, destructor) != 0) {     /* all taken (key_hog): free one */
        int k = 1023;
        while (k >= 0 && pthread_key_delete((pthread_key_t)k) != 0) k--;
        if (pthread_key_create(&key, destructor) != 0) hz_fail("no pthread key to be had");
    }
    long start = hz_rss_kb();
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, thread_main, NULL) || pthread_join(t, NULL)) hz_fail("thread");
    }
    malloc_trim(0);
    printf("key_dtor: runs=%d rss_start_kb=%ld rss_end_kb=%ld\n", runs, start, hz_rss_kb());
    return 0;
}
