/* owner_token.c - a heap is given back when its thread dies holding it (the robust-mutex owner
 * token), and never while its thread lives, in children the allocator's fork handler does not
 * see either.
 *
 *   owner_token _Fork : the child of _Fork() (no atfork handlers run) keeps allocating on the
 *                       main thread's heap, whose token is held under the parent's thread id,
 *                       while 2 new threads of the child run slow paths (each tries tokens);
 *                       main's blocks are stamped and checked. Prints "_Fork: child=0"
 *   owner_token clone : the same in a child of a raw clone(SIGCHLD) syscall; "clone: child=0"
 *   owner_token vfork : 2 threads churn through slow paths while the main thread vforks
 *                       children that allocate and free before _exit, 200 times; main's
 *                       stamped blocks are checked throughout. Prints "vfork: ok=1"
 * Run it under LD_PRELOAD of the library (the checked spec aborts on a block handed out twice).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hzcheck.h"

#define SLOTS 256

static void *blk[SLOTS];
static size_t len[SLOTS];
static uint64_t cookie[SLOTS];
static volatile int stop;

/* main's own traffic: replace random slots, checking each block before it is freed */
static void churn_main(hz_rng *r, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        int k = (int)(hz_rand(r) % SLOTS);
        if (blk[k]) {
            hz_verify(blk[k], len[k], cookie[k], "main's block");
            free(blk[k]);
        }
        len[k] = 16 + hz_rand(r) % 2000;
        blk[k] = malloc(len[k]);
        if (!blk[k]) hz_fail("malloc");
        cookie[k] = hz_rand(r);
        hz_stamp(blk[k], len[k], cookie[k]);
    }
}

/* another thread: bursts past its caches, so its slow paths (and their token tries) run */
static void *churn_other(void *arg)
{
    (void)arg;
    static __thread void *mine[4096];
    while (!stop) {
        for (int i = 0; i < 4096; i++) mine[i] = malloc(48 + (size_t)(i % 7) * 100);
        for (int i = 0; i < 4096; i++) free(mine[i]);
    }
    return NULL;
}

/* in a child: main keeps allocating while two new threads run slow paths */
static int child_body(void)
{
    hz_rng r;
    hz_rng_seed(&r, 77);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, churn_other, NULL)) return 3;
    churn_main(&r, 300000);
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return 0;
}

static void in_child(const char *mode, pid_t pid)
{
    if (pid < 0) hz_fail("%s failed", mode);
    if (pid == 0) _exit(child_body());
    int st;
    if (waitpid(pid, &st, 0) != pid) hz_fail("waitpid");
    printf("%s: child=%d\n", mode, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

extern pid_t _Fork(void);

int main(int argc, char **argv)
{
    hz_prog = "owner_token";
    const char *mode = argc > 1 ? argv[1] : "";
    hz_rng r;
    hz_rng_seed(&r, 5);
    churn_main(&r, 2000);   /* main has a heap, with blocks in it */
    if (!strcmp(mode, "_Fork")) {
        in_child(mode, _Fork());
    } else if (!strcmp(mode, "clone")) {
        in_child(mode, (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0));
    } else if (!strcmp(mode, "vfork")) {
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&t[i], NULL, churn_other, NULL)) hz_fail("pthread_create");
        for (int i = 0; i < 200; i++) {
            pid_t pid = vfork();
            if (pid == 0) {
                void *p = malloc(100), *q = malloc(5000);   /* on the parent's heap */
                free(p);
                free(q);
                _exit(0);
            }
            if (pid < 0) hz_fail("vfork");
            waitpid(pid, NULL, 0);
            churn_main(&r, 500);
        }
        stop = 1;
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        printf("vfork: ok=1\n");
    } else {
        hz_fail("usage: owner_token _Fork|clone|vfork");
    }
    for (int k = 0; k < SLOTS; k++)
        if (blk[k]) hz_verify(blk[k], len[k], cookie[k], "main's block");
    return 0;
}
