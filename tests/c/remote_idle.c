/* remote_idle.c - blocks freed by one thread into the heap of another that takes no more slow
 * paths must come back to the OS with no allocator call afterwards (no malloc_trim either).
 *
 *   remote_idle exited   : a worker allocates 96 MiB of 3000 B blocks and exits; main frees them
 *                          all (remote frees into the exited thread's heap) and waits.
 *   remote_idle sleeping : the same, but the worker stays alive, asleep on a semaphore (a poll
 *                          loop while another thread frees what it allocated: redis's lazy free);
 *                          after the wait it allocates and checks 96 MiB again and frees them.
 *   remote_idle fork     : a worker allocates 4M blocks of 16 B and exits, main frees them all
 *                          and forks every 2 ms for 1.2 s (while the collector gives them back,
 *                          in shares: a fork lands between two); each child calls malloc_trim
 *                          and fails unless its RSS is then under 1/16 of the peak (blocks
 *                          the collector held at the fork and the child lost would keep theirs).
 *   remote_idle race     : an owner allocates stamped blocks in bursts with short naps between
 *                          them, a second thread verifies and frees them (every free remote), for
 *                          `seconds` (argv[2], default 2): the collector takes the owner's inbox
 *                          during its naps and may meet it coming back. Fails on a block handed
 *                          out twice or overwritten.
 *
 * exited/sleeping print "remote_idle MODE: rss_peak_kb=A rss_at_free_kb=B rss_after_kb=C
 * after_ms=D" (RSS is sampled every 50 ms for up to 3 s without an allocator call; C is the
 * lowest, D when RSS first fell below A/4, -1 if never); fork prints "remote_idle fork: forks=N
 * bad=M"; race prints "remote_idle race: ok
 * blocks=N". The caller bounds the figures.
 */
#include "hzalloc.h"
#include "hzcheck.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE 3000
#define COUNT 33554                 /* x 3000 B: 96 MiB */

static void **blocks;
static sem_t worker_done, worker_go;

/* blocks[0..count) get stamped blocks of `size` bytes */
static void alloc_blocks(long count, size_t size)
{
    for (long i = 0; i < count; i++) {
        blocks[i] = XMALLOC(size);
        if (!blocks[i]) hz_fail("out of memory at block %ld", i);
        hz_stamp(blocks[i], size, (uint64_t)i);
    }
}

static void *worker(void *arg)
{
    int stay = *(int *)arg;
    alloc_blocks(COUNT, SIZE);
    sem_post(&worker_done);
    if (!stay) return NULL;
    sem_wait(&worker_go);           /* asleep, alive: no allocator call while main waits */
    alloc_blocks(COUNT, SIZE);      /* its heap still works after the collector took its inbox */
    for (long i = 0; i < COUNT; i++) {
        hz_verify(blocks[i], SIZE, (uint64_t)i, "after the wait");
        XFREE(blocks[i]);
    }
    return NULL;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int held(const char *mode)
{
    int stay = !strcmp(mode, "sleeping");
    pthread_t t;
    sem_init(&worker_done, 0, 0);
    sem_init(&worker_go, 0, 0);
    void *mine = XMALLOC(16);       /* main's own heap, hence an outbox that batches the frees */
    pthread_create(&t, NULL, worker, &stay);
    sem_wait(&worker_done);
    if (!stay) pthread_join(t, NULL);
    long peak = hz_rss_kb();
    for (long i = 0; i < COUNT; i++) {
        hz_verify(blocks[i], SIZE, (uint64_t)i, "before the remote free");
        XFREE(blocks[i]);
    }
    long at_free = hz_rss_kb(), low = at_free, after_ms = -1, start = now_ms();
    while (now_ms() - start < 3000) {
        usleep(50000);
        long rss = hz_rss_kb();
        if (rss < low) low = rss;
        if (after_ms < 0 && rss < peak / 4) after_ms = now_ms() - start;
    }
    printf("remote_idle %s: rss_peak_kb=%ld rss_at_free_kb=%ld rss_after_kb=%ld after_ms=%ld\n",
           mode, peak, at_free, low, after_ms);
    fflush(stdout);
    if (stay) {
        sem_post(&worker_go);
        pthread_join(t, NULL);
    }
    XFREE(mine);
    return 0;
}

/* race: a ring of pointers from the owner to the freer. A block's words: [0] the allocator's,
 * [1] its number, [2] LIVE while it is handed out, [3..7] a pattern of its number */
#define RING 4096
#define LIVE 0x4c4956454c495645ull
static void *_Atomic ring[RING];
static atomic_long produced, consumed;
static atomic_int stop;

static void *freer(void *arg)
{
    (void)arg;
    for (;;) {
        long c = atomic_load(&consumed);
        if (c == atomic_load(&produced)) {
            if (atomic_load(&stop) && c == atomic_load(&produced)) return NULL;
            usleep(100);
            continue;
        }
        uint64_t *w = atomic_load(&ring[c % RING]);
        if (w[1] != (uint64_t)c || w[2] != LIVE) hz_fail("block %p (number %ld) overwritten", (void *)w, c);
        for (int i = 3; i < 8; i++)
            if (w[i] != hz_mix64((uint64_t)c + (uint64_t)i)) hz_fail("block %p word %d overwritten", (void *)w, i);
        *(volatile uint64_t *)&w[2] = 0;   /* volatile: a store right before free is otherwise dropped */
        XFREE(w);
        atomic_store(&consumed, c + 1);
    }
}

static int race(int seconds)
{
    pthread_t t;
    pthread_create(&t, NULL, freer, NULL);
    long start = now_ms(), n = 0;
    hz_rng rng;
    hz_rng_seed(&rng, 7);
    while (now_ms() - start < seconds * 1000L) {
        long burst = (long)hz_range(&rng, 1, 3000);
        for (long k = 0; k < burst; k++) {
            while (n - atomic_load(&consumed) >= RING) usleep(50);
            uint64_t *w = XMALLOC(64);
            if (!w) hz_fail("out of memory");
            if (*(volatile uint64_t *)&w[2] == LIVE) hz_fail("block %p handed out while the freer holds it", (void *)w);
            w[1] = (uint64_t)n;
            w[2] = LIVE;
            for (int i = 3; i < 8; i++) w[i] = hz_mix64((uint64_t)n + (uint64_t)i);
            atomic_store(&ring[n % RING], w);
            atomic_store(&produced, ++n);
        }
        usleep((useconds_t)hz_range(&rng, 0, 4000));   /* idle: the collector may come */
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("remote_idle race: ok blocks=%ld\n", n);
    return 0;
}

#define FORK_COUNT (4L << 20)

static void *small_worker(void *arg)
{
    (void)arg;
    alloc_blocks(FORK_COUNT, 16);
    return NULL;
}

extern int malloc_trim(size_t);

static int forks(void)
{
    blocks = XMALLOC(FORK_COUNT * sizeof *blocks);
    void *mine = XMALLOC(16);       /* main's own heap: batched frees */
    pthread_t t;
    pthread_create(&t, NULL, small_worker, NULL);
    pthread_join(t, NULL);
    long peak = hz_rss_kb();
    for (long i = 0; i < FORK_COUNT; i++) XFREE(blocks[i]);
    XFREE(blocks);
    int n = 0, bad = 0;
    for (long start = now_ms(); now_ms() - start < 1200; n++) {
        pid_t pid = fork();
        if (pid < 0) hz_fail("fork failed");
        if (pid == 0) {
            malloc_trim(0);
            _exit(hz_rss_kb() < peak / 16 ? 0 : 1);   /* ~1 MiB when none is lost */
        }
        int st;
        waitpid(pid, &st, 0);
        bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        usleep(2000);
    }
    XFREE(mine);
    printf("remote_idle fork: forks=%d bad=%d\n", n, bad);
    return 0;
}

int main(int argc, char **argv)
{
    hz_prog = "remote_idle";
    const char *mode = argc > 1 ? argv[1] : "exited";
    if (!strcmp(mode, "race")) return race(argc > 2 ? atoi(argv[2]) : 2);
    if (!strcmp(mode, "fork")) return forks();
    blocks = calloc(COUNT, sizeof *blocks);          /* the test's own array: libc's calloc */
    if (!blocks || (strcmp(mode, "exited") && strcmp(mode, "sleeping"))) return 2;
    return held(mode);
}
