/* dlclose: a program that dlopen()s an allocator library, uses it from two threads (enough
 * to start the purger, where the spec has one), dlclose()s it and goes on: the library must
 * stay mapped (it is linked -z nodelete), or the purger's next wake-up and the thread's exit
 * (the heap's TLS destructor) run code that is gone.
 *
 *   dlclose LIBRARY PREFIX      e.g. dlclose build/default/libhz_default_prefixed.so hz_default_
 * Prints "dlclose ok" and exits 0.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);

static malloc_fn lib_malloc;
static free_fn lib_free;
static pthread_barrier_t closed;

/* 48 MiB in 4 KiB blocks, then all freed: past the purger's start threshold (32 MiB) */
static void churn(void) {
    enum { N = 12288 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = lib_malloc(4096);
        if (!p[i]) { fprintf(stderr, "dlclose: malloc failed\n"); exit(1); }
        memset(p[i], 1, 4096);
    }
    for (int i = 0; i < N; i++) lib_free(p[i]);
}

static void *worker(void *arg) {
    (void)arg;
    void *q = lib_malloc(100);    /* this thread now has a heap: its TLS destructor is armed */
    lib_free(q);
    pthread_barrier_wait(&closed); /* wait for the dlclose; exit after it */
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: dlclose LIBRARY PREFIX\n"); return 2; }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "dlclose: %s\n", dlerror()); return 1; }
    char name[256];
    snprintf(name, sizeof name, "%smalloc", argv[2]);
    lib_malloc = (malloc_fn)dlsym(h, name);
    snprintf(name, sizeof name, "%sfree", argv[2]);
    lib_free = (free_fn)dlsym(h, name);
    if (!lib_malloc || !lib_free) { fprintf(stderr, "dlclose: no %s\n", name); return 1; }
    pthread_barrier_init(&closed, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    churn();
    if (dlclose(h)) { fprintf(stderr, "dlclose: %s\n", dlerror()); return 1; }
    pthread_barrier_wait(&closed);
    pthread_join(t, NULL);
    struct timespec nap = {1, 0};   /* the purger's delay (250 ms) passes several times */
    nanosleep(&nap, NULL);
    puts("dlclose ok");
    return 0;
}
