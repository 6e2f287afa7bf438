/* key_late.c - threads whose first allocation happens in the last round of pthread key
 * destructors: a destructor re-arms its key until the last of glibc's
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds and only then allocates. The allocator's own key is set
 * too late for glibc to run its destructor, so that thread's heap stays LIVE after the thread
 * is gone; the allocator must notice the dead thread and reclaim the heap. N threads run one
 * at a time (none allocates before that round); main frees the blocks they leave, then runs
 * a burst of slow paths (not with `quiet`: then nothing but the threads allocates). Prints
 * "key_late: threads=N mapped_kb=A rss_kb=B" (VmSize growth and VmRSS at the end).
 *
 *   key_late [N [quiet]] */
#include "hzcheck.h"

#include <limits.h>
#include <pthread.h>

static pthread_key_t key;          /* made first: a low key, whose setspecific never allocates */
static void *left[4096];
static int nleft;

static void destructor(void *v)
{
    long round = (long)v;
    if (round < PTHREAD_DESTRUCTOR_ITERATIONS) {   /* not yet: come back next round */
        pthread_setspecific(key, (void *)(round + 1));
        return;
    }
    void *p = malloc(100);          /* this thread's first allocation */
    if (!p) hz_fail("malloc in the last destructor round failed");
    memset(p, 0x5a, 100);
    left[__atomic_fetch_add(&nleft, 1, __ATOMIC_RELAXED) % 4096] = p;
}

static void *thread_main(void *arg)
{
    (void)arg;
    pthread_setspecific(key, (void *)1L);
    return NULL;
}

static long status_kb(const char *field)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, strlen(field))) v = atol(line + strlen(field));
    if (f) fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    hz_prog = "key_late";
    int n = argc > 1 ? atoi(argv[1]) : 4000;
    int quiet = argc > 2 && !strcmp(argv[2], "quiet");
    if (pthread_key_create(&key, destructor)) hz_fail("pthread_key_create");
    long vm0 = status_kb("VmSize:");
    static void *churn[2048];
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, thread_main, NULL) || pthread_join(t, NULL)) hz_fail("thread");
        if (i % 4096 == 4095 || i == n - 1) {
            int k = nleft < 4096 ? nleft : 4096;
            for (int j = 0; j < k; j++) free(left[j]);
            nleft = 0;
        }
        if (quiet) continue;
        for (int j = 0; j < 2048; j++) churn[j] = malloc(64);   /* past the cache: slow paths */
        for (int j = 0; j < 2048; j++) free(churn[j]);
    }
    printf("key_late: threads=%d mapped_kb=%ld rss_kb=%ld\n", n, status_kb("VmSize:") - vm0,
           status_kb("VmRSS:"));
    return 0;
}
