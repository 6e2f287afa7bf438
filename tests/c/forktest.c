/*
 * forktest.c - fork() while other threads are busy in malloc/free.
 *
 *   forktest [children=50]
 *
 * 4 worker threads loop allocating / verifying / freeing blocks of varied
 * sizes (with cross-thread hand-offs through a shared atomic array) until
 * told to stop.  Meanwhile the main thread forks `children` children one
 * after another, keeping up to 4 alive at once.  Each child (under alarm(10)):
 *   - verifies and frees blocks the parent's main thread allocated pre-fork,
 *   - takes the blocks that the (now non-existent) worker threads had handed
 *     off, verifies and frees them,
 *   - allocates/frees a few thousand blocks of various sizes incl. > 1 MiB,
 *   - creates and joins one thread that also allocates (and hands blocks
 *     back to the child's main thread to free),
 *   - _exit(0).
 * A child that deadlocks in the allocator dies by its alarm; the parent
 * requires exit status 0 from every child and has its own alarm(60).
 *
 * Output: "fork ok: children=N", exit 0; otherwise a message, exit 1.
 */
#define _GNU_SOURCE
#include "hzalloc.h"
#include "hzcheck.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define NWORKERS 4
#define WSLOTS 128
#define NTRANSFER 64
#define MAX_ALIVE 4
#define NPREFORK 16
#define PARENT_TIMEOUT 60
#define CHILD_TIMEOUT 10

static _Atomic(void *) g_transfer[NTRANSFER];
static volatile pid_t g_children[MAX_ALIVE]; /* live children, 0 = free slot */
static atomic_int g_stop;
static atomic_ullong g_worker_ops;

static size_t pick_size(hz_rng *r)
{
    uint64_t x = hz_rand(r) % 1000;
    if (x < 2)
        return hz_range(r, (size_t)256 << 10, (size_t)1 << 20); /* 256 KiB .. 1 MiB */
    if (x < 50)
        return hz_range(r, 4097, (size_t)64 << 10);
    if (x < 300)
        return hz_range(r, 513, 4096);
    return hz_range(r, HZ_HDR_MIN, 512);
}

static void *alloc_stamped(hz_rng *r, size_t size, uint64_t cookie)
{
    void *p;
    if (hz_rand(r) % 8 == 0) {
        p = XCALLOC(1, size);
        if (p)
            hz_verify_zero(p, size, "calloc");
    } else {
        p = XMALLOC(size);
    }
    if (!p)
        hz_fail("allocation of %zu bytes returned NULL (pid %d)", size, (int)getpid());
    hz_check_align(p, hz_min_align(size), size, "malloc");
    hz_stamp(p, size, cookie);
    return p;
}

/* blocks in the transfer array carry the self-describing stamp header */
static void free_transferred(void *p, const char *what)
{
    hz_verify_hdr(p, NULL, what);
    XFREE(p);
}

/* ---- parent worker threads --------------------------------------------- */

typedef struct {
    void *p;
    size_t size;
    uint64_t cookie;
} slot_t;

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    hz_rng rng;
    hz_rng_seed(&rng, 0xf0f0f0ULL + (uint64_t)id);
    slot_t slots[WSLOTS];
    memset(slots, 0, sizeof slots);
    unsigned long long ops = 0;

    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        for (int k = 0; k < 64; k++, ops++) {
            uint64_t x = hz_rand(&rng);
            slot_t *s = &slots[x % WSLOTS];
            if ((x >> 40) % 16 == 0) {
                void *old = atomic_exchange(&g_transfer[hz_rand(&rng) % NTRANSFER], NULL);
                if (old)
                    free_transferred(old, "worker cross-thread free");
            } else if (!s->p) {
                s->size = pick_size(&rng);
                s->cookie = hz_rand(&rng);
                s->p = alloc_stamped(&rng, s->size, s->cookie);
            } else {
                hz_verify(s->p, s->size, s->cookie, "worker free");
                if ((x >> 40) % 4 == 1) {
                    void *old = atomic_exchange(&g_transfer[hz_rand(&rng) % NTRANSFER], s->p);
                    if (old)
                        free_transferred(old, "worker cross-thread free");
                } else {
                    XFREE(s->p);
                }
                s->p = NULL;
            }
        }
    }
    for (int i = 0; i < WSLOTS; i++)
        if (slots[i].p) {
            hz_verify(slots[i].p, slots[i].size, slots[i].cookie, "worker exit");
            XFREE(slots[i].p);
        }
    atomic_fetch_add(&g_worker_ops, ops);
    return NULL;
}

/* ---- child ---------------------------------------------------------------- */

static void child_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "forktest: FAIL: child timed out after 10 s (allocator deadlock "
                              "after fork?)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

/* on parent failure, do not leave children behind (async-signal-safe) */
static void kill_children(void)
{
    for (int i = 0; i < MAX_ALIVE; i++)
        if (g_children[i] > 0)
            kill(g_children[i], SIGKILL);
}

static void parent_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "forktest: FAIL: parent timed out after 60 s (deadlock?)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    kill_children();
    _exit(1);
}

#define CT_KEEP 32
typedef struct {
    uint64_t seed;
    void *keep[CT_KEEP]; /* blocks handed back to the child's main thread */
} child_thread_arg;

static void *child_thread(void *arg)
{
    child_thread_arg *a = (child_thread_arg *)arg;
    hz_rng rng;
    hz_rng_seed(&rng, a->seed);
    void *live[64] = {0};
    size_t sz[64];
    uint64_t ck[64];
    for (int i = 0; i < 1000; i++) {
        int j = (int)(hz_rand(&rng) % 64);
        if (live[j]) {
            hz_verify(live[j], sz[j], ck[j], "child thread");
            XFREE(live[j]);
        }
        sz[j] = pick_size(&rng);
        ck[j] = hz_rand(&rng);
        live[j] = alloc_stamped(&rng, sz[j], ck[j]);
    }
    for (int j = 0; j < 64; j++)
        if (live[j]) {
            if (j < CT_KEEP) {
                a->keep[j] = live[j]; /* freed by the child's main thread */
            } else {
                hz_verify(live[j], sz[j], ck[j], "child thread");
                XFREE(live[j]);
            }
        }
    return NULL;
}

typedef struct {
    void *p;
    size_t size;
    uint64_t cookie;
} preblk_t;

static void child_main(int idx, preblk_t *pre)
{
    hz_fail_hook = NULL; /* inherited from the parent */
    signal(SIGALRM, child_alarm);
    alarm(CHILD_TIMEOUT);
    hz_rng rng;
    hz_rng_seed(&rng, 0xc41dULL * 1000 + (uint64_t)idx);

    /* 1. blocks allocated by the parent's main thread right before fork */
    for (int i = 0; i < NPREFORK; i++) {
        hz_verify(pre[i].p, pre[i].size, pre[i].cookie, "child: inherited block");
        XFREE(pre[i].p);
    }
    /* 2. blocks the parent's worker threads handed off (those threads do not exist here) */
    for (int i = 0; i < NTRANSFER; i++) {
        void *p = atomic_exchange(&g_transfer[i], NULL);
        if (p)
            free_transferred(p, "child: inherited hand-off block");
    }
    /* 3. a few thousand allocations of various sizes, including > 1 MiB */
    enum { NLIVE = 256 };
    void *live[NLIVE] = {0};
    size_t sz[NLIVE];
    uint64_t ck[NLIVE];
    for (int i = 0; i < 4000; i++) {
        int j = (int)(hz_rand(&rng) % NLIVE);
        if (live[j]) {
            hz_verify(live[j], sz[j], ck[j], "child");
            XFREE(live[j]);
        }
        sz[j] = (i % 1000 == 0) ? hz_range(&rng, ((size_t)1 << 20) + 1, (size_t)3 << 20)
                                : pick_size(&rng);
        ck[j] = hz_rand(&rng);
        live[j] = alloc_stamped(&rng, sz[j], ck[j]);
    }
    {
        size_t big = ((size_t)2 << 20) + 12345;
        void *p = alloc_stamped(&rng, big, 99);
        uintptr_t oldaddr = (uintptr_t)p;
        void *q = XREALLOC(p, big * 2);
        if (!q)
            hz_fail("child: realloc of large block returned NULL");
        unsigned eb, gb;
        if (hz_check_prefix(q, big, oldaddr, big, 99, &eb, &gb) != (size_t)-1)
            hz_fail("child: realloc of large block lost contents");
        XFREE(q);
    }
    /* 4. one thread that allocates too */
    child_thread_arg *ta = (child_thread_arg *)XCALLOC(1, sizeof *ta);
    if (!ta)
        hz_fail("child: calloc returned NULL");
    ta->seed = hz_rand(&rng);
    pthread_t th;
    int rc = pthread_create(&th, NULL, child_thread, ta);
    if (rc)
        hz_fail("child: pthread_create failed: %s", strerror(rc));
    /* keep allocating concurrently */
    for (int i = 0; i < 1000; i++) {
        int j = (int)(hz_rand(&rng) % NLIVE);
        if (live[j]) {
            hz_verify(live[j], sz[j], ck[j], "child");
            XFREE(live[j]);
        }
        sz[j] = pick_size(&rng);
        ck[j] = hz_rand(&rng);
        live[j] = alloc_stamped(&rng, sz[j], ck[j]);
    }
    rc = pthread_join(th, NULL);
    if (rc)
        hz_fail("child: pthread_join failed: %s", strerror(rc));
    for (int j = 0; j < CT_KEEP; j++)
        if (ta->keep[j])
            free_transferred(ta->keep[j], "child: block from child thread");
    XFREE(ta);
    for (int j = 0; j < NLIVE; j++)
        if (live[j]) {
            hz_verify(live[j], sz[j], ck[j], "child");
            XFREE(live[j]);
        }
    _exit(0);
}

/* ---- parent ----------------------------------------------------------------- */

static void check_status(pid_t pid, int st)
{
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return;
    if (WIFEXITED(st))
        hz_fail("child %d exited with status %d%s", (int)pid, WEXITSTATUS(st),
                WEXITSTATUS(st) == 3 ? " (timeout: deadlock after fork?)" : "");
    if (WIFSIGNALED(st))
        hz_fail("child %d killed by signal %d (%s)", (int)pid, WTERMSIG(st),
                strsignal(WTERMSIG(st)));
    hz_fail("child %d: unexpected wait status %#x", (int)pid, st);
}

static pid_t wait_one(void)
{
    int st;
    pid_t pid;
    do
        pid = waitpid(-1, &st, 0);
    while (pid < 0 && errno == EINTR);
    if (pid < 0)
        hz_fail("waitpid: %s", strerror(errno));
    for (int i = 0; i < MAX_ALIVE; i++)
        if (g_children[i] == pid)
            g_children[i] = 0;
    check_status(pid, st);
    return pid;
}

int main(int argc, char **argv)
{
    hz_prog = "forktest";
    int nchildren = 50;
    if (argc > 1) {
        nchildren = atoi(argv[1]);
        if (nchildren <= 0) {
            fprintf(stderr, "usage: forktest [children=50]\n");
            return 2;
        }
    }
    hz_fail_hook = kill_children;
    signal(SIGALRM, parent_alarm);
    alarm(PARENT_TIMEOUT);

    pthread_t workers[NWORKERS];
    for (int i = 0; i < NWORKERS; i++) {
        int rc = pthread_create(&workers[i], NULL, worker_main, (void *)(intptr_t)i);
        if (rc)
            hz_fail("pthread_create failed: %s", strerror(rc));
    }

    hz_rng rng;
    hz_rng_seed(&rng, 0xfa11ULL);
    preblk_t pre[NPREFORK];
    int alive = 0;
    for (int c = 0; c < nchildren; c++) {
        if (alive == MAX_ALIVE) {
            wait_one();
            alive--;
        }
        /* give the workers time to be in the middle of something */
        usleep((useconds_t)(hz_rand(&rng) % 2000));
        for (int i = 0; i < NPREFORK; i++) {
            pre[i].size = pick_size(&rng);
            pre[i].cookie = hz_rand(&rng);
            pre[i].p = alloc_stamped(&rng, pre[i].size, pre[i].cookie);
        }
        pid_t pid = fork();
        if (pid < 0)
            hz_fail("fork: %s", strerror(errno));
        if (pid == 0)
            child_main(c, pre); /* does not return */
        alive++;
        for (int i = 0; i < MAX_ALIVE; i++)
            if (g_children[i] == 0) {
                g_children[i] = pid;
                break;
            }
        for (int i = 0; i < NPREFORK; i++) {
            hz_verify(pre[i].p, pre[i].size, pre[i].cookie, "parent after fork");
            XFREE(pre[i].p);
        }
    }
    while (alive > 0) {
        wait_one();
        alive--;
    }

    atomic_store(&g_stop, 1);
    for (int i = 0; i < NWORKERS; i++)
        pthread_join(workers[i], NULL);
    for (int i = 0; i < NTRANSFER; i++) {
        void *p = atomic_exchange(&g_transfer[i], NULL);
        if (p)
            free_transferred(p, "final cleanup");
    }
    alarm(0);
    printf("fork ok: children=%d\n", nchildren);
    return 0;
}
