/* atfork_alloc.c - an LD_PRELOAD shim listed after the allocator, so that its constructor runs
 * first (as a library the program links against does) and its pthread_atfork handlers run
 * inside the allocator's fork window: prepare after the allocator's prepare took its locks,
 * parent and child before the allocator's handlers release them.  Every handler allocates and
 * frees on the allocator's slow paths: a size no one else uses (a new slab), a block aligned to
 * 1 MiB (the aligned pool), a 3 MiB block (the large box and its cache), and frees a large block
 * the previous handler kept.  glibc's malloc takes its own locks after the handlers, so they
 * may allocate; an allocator whose fork locks they meet deadlocks (the program's alarm ends it).
 * HZ_ATFORK_ALLOC=child (or prepare, parent, a comma list) makes only those handlers allocate.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void *kept;   /* a large block one handler allocates and the next one frees */

static void churn(size_t odd_size)
{
    void *volatile p = malloc(odd_size);   /* volatile: gcc may drop a malloc/free pair */
    if (p) memset(p, 1, odd_size);
    free(p);
    void *volatile a = aligned_alloc((size_t)1 << 20, 100);
    free(a);
    void *volatile big = malloc((size_t)3 << 20);
    if (big) memset(big, 1, 4096);
    free(kept);
    kept = big;
}

/* HZ_ATFORK_ALLOC=child (or prepare, parent, a comma list): only those handlers allocate */
static int wanted(const char *which)
{
    const char *only = getenv("HZ_ATFORK_ALLOC");
    return !only || strstr(only, which) != NULL;
}

static void prepare(void) { if (wanted("prepare")) churn(20000); }
static void parent(void) { if (wanted("parent")) churn(20016); }
static void child(void) { if (wanted("child")) churn(20032); }

__attribute__((constructor)) static void register_handlers(void)
{
    pthread_atfork(prepare, parent, child);
}
