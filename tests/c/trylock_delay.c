/* trylock_delay.c - an LD_PRELOAD shim, loaded in front of the allocator: the first
 * pthread_mutex_trylock of a mutex whose lock word carries FUTEX_OWNER_DIED (a heap token the
 * kernel marked) sleeps 300 ms before it tries, as if that thread were preempted between
 * seeing the mark and trying; `hz_delay_tid` / `hz_delay_result` tell who it was and what it
 * got (-1: not yet).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/futex.h>
#include <pthread.h>
#include <unistd.h>

volatile int hz_delay_tid, hz_delay_result = -1;

int pthread_mutex_trylock(pthread_mutex_t *m)
{
    static int (*real)(pthread_mutex_t *);
    static int delayed;
    if (!real) real = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
    if (!(__atomic_load_n(&m->__data.__lock, __ATOMIC_ACQUIRE) & FUTEX_OWNER_DIED) ||
        __atomic_exchange_n(&delayed, 1, __ATOMIC_ACQ_REL))
        return real(m);
    usleep(300000);
    int r = real(m);
    hz_delay_tid = gettid();
    __atomic_store_n(&hz_delay_result, r, __ATOMIC_RELEASE);
    return r;
}
