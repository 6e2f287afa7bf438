/* purger.c - freed memory goes back to the OS with no allocator activity afterwards.
 *
 *   purger        : allocate 96 MiB of 4..16 KiB blocks (slab memory), free them all, then
 *                   sleep 1.5 s without a single malloc or free, and report.
 *   purger fork   : the same, then fork: the child does it again (a purger it inherits does not
 *                   exist there) and reports too.
 *   purger large [fork] : the same with 12 blocks of 2.5 MiB (large blocks: the large cache keeps
 *                   them), then one small allocation (an allocation miss: it starts a purger
 *                   that a free asked for).
 *
 * Built with -DPURGER_TLS_KIB=N, the program has N KiB of __thread data (glibc puts a program's
 * static TLS on every thread's stack, the purger's too).
 *
 * Prints, per process, "purger PID: rss_peak_kb=A rss_at_free_kb=B rss_after_kb=C tasks=N
 * sigblk=HEX" where tasks counts the threads and sigblk is the signal mask of the thread that
 * is not the main one (0 if there is none). The caller bounds the figures.
 */
#include "hzalloc.h"
#include "hzcheck.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOCKS 9830                 /* x 4..16 KiB, ~96 MiB */

static void *blocks[BLOCKS];

#ifdef PURGER_TLS_KIB
__thread char purger_tls[PURGER_TLS_KIB << 10];   /* external: the linker keeps it */
#endif

/* the number of threads, and the SigBlk mask of a thread other than the main one */
static int tasks(unsigned long long *sigblk)
{
    char path[300], line[256];
    int n = 0;
    *sigblk = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        n++;
        if (atoi(e->d_name) == getpid()) continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "SigBlk:", 7)) *sigblk = strtoull(line + 7, NULL, 16);
        if (f) fclose(f);
    }
    closedir(d);
    return n;
}

static void *xmalloc_touched(size_t n)
{
    void *p = XMALLOC(n);
    if (!p) { fprintf(stderr, "purger: out of memory\n"); exit(1); }
    return memset(p, 0x5a, n);
}

/* allocate, touch and free count blocks of size lo..hi, then wait; `miss` bytes are allocated
 * right after the frees when not 0 */
static void round_trip(int count, size_t lo, size_t hi, size_t miss)
{
    unsigned seed = 12345;
    for (int i = 0; i < count; i++) blocks[i] = xmalloc_touched(lo + (size_t)rand_r(&seed) % (hi - lo + 1));
    long peak = hz_rss_kb();
    for (int i = 0; i < count; i++) XFREE(blocks[i]);
    if (miss) XFREE(xmalloc_touched(miss));
    long at_free = hz_rss_kb();
    struct timespec nap = {1, 500000000L};
    nanosleep(&nap, NULL);           /* no allocator call from here on */
    long after = hz_rss_kb();
    unsigned long long sigblk;
    int n = tasks(&sigblk);
    printf("purger %d: rss_peak_kb=%ld rss_at_free_kb=%ld rss_after_kb=%ld tasks=%d sigblk=%llx\n",
           (int)getpid(), peak, at_free, after, n, sigblk);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int large = argc > 1 && !strcmp(argv[1], "large");
    int forking = argc > 1 + large && !strcmp(argv[1 + large], "fork");
#ifdef PURGER_TLS_KIB
    purger_tls[argc] = 1;
#endif
    /* large: a small size not allocated before in this process, so its allocation misses */
    if (large) round_trip(12, 2560 << 10, 2560 << 10, 3000);
    else round_trip(BLOCKS, 4096, 16384, 0);
    if (forking) {
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            if (large) round_trip(12, 2560 << 10, 2560 << 10, 2000);
            else round_trip(BLOCKS, 4096, 16384, 0);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) return 1;
    }
    return 0;
}
