/* fork_purger.c - a fork while the purger is wanted but not started yet (30 MiB of large blocks
 * freed past max_dirty, no allocation miss since), behind tests/c/atfork_alloc.c, whose child
 * handler allocates (a miss, inside the allocator's fork window): the child must end up with one
 * purger, not two (one started by that handler, then a second one wanted and started by the
 * allocator's own child handler, both sharing the purger's round; they crashed the child).
 * The child makes 3000 small allocations and prints "fork_purger: threads=N" (its threads:
 * 2 with a purger, 1 without one); the parent exits with the child's status.
 * Run it under LD_PRELOAD of the library, then the shim.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hzcheck.h"

int main(void)
{
    hz_prog = "fork_purger";
    void *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = malloc((size_t)10 << 20);
        if (!w[i]) hz_fail("malloc(10 MiB) failed");
        memset(w[i], 1, (size_t)10 << 20);
    }
    for (int i = 0; i < 3; i++) free(w[i]);   /* the purger is wanted; no miss starts it here */
    fflush(stdout);
    pid_t c = fork();
    if (c < 0) hz_fail("fork failed");
    if (c == 0) {
        for (int i = 0; i < 3000; i++) {
            void *volatile p = malloc(16 + (size_t)i);   /* volatile: kept, not folded away */
            free(p);
        }
        printf("fork_purger: threads=%d\n", hz_thread_count());
        fflush(stdout);
        _exit(0);
    }
    int st;
    if (waitpid(c, &st, 0) != c) hz_fail("waitpid failed");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
