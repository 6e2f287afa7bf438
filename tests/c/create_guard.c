/* create_guard.c - an LD_PRELOAD shim, loaded in front of the allocator, that aborts if
 * pthread_create is ever called from inside free().
 *
 * glibc frees a joined thread's TLS while it holds its thread-stack lock, which pthread_create
 * takes too: an allocator that starts a thread from free can hang the process. This shim makes
 * that contract testable: every free() (the program's and glibc's own) passes through it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef int create_fn(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static void (*real_free)(void *);
static create_fn *real_create;
static __thread int in_free;

__attribute__((constructor)) static void guard_init(void)
{
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_create = (create_fn *)dlsym(RTLD_NEXT, "pthread_create");
}

void free(void *p)
{
    if (!real_free) return;         /* before the constructor: leak, never recurse */
    in_free++;
    real_free(p);
    in_free--;
}

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    static const char msg[] = "create_guard: pthread_create called inside free\n";
    if (in_free) {
        if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
        abort();
    }
    return real_create(t, a, fn, arg);
}
