/* key_hog.c - an LD_PRELOAD shim whose constructor takes every pthread key there is, before
 * the allocator's constructor runs (preload it after the allocator: ld.so initializes the
 * later one first) and before any allocation: the allocator finds no key for its thread-exit
 * hook and must still hand back the heaps of exited threads. It makes no allocation itself. */
#include <pthread.h>
#include <unistd.h>

__attribute__((constructor)) static void take_every_key(void)
{
    pthread_key_t k;
    int n = 0;
    while (pthread_key_create(&k, NULL) == 0) n++;
    static const char msg[] = "key_hog: every pthread key taken\n";
    if (n) { ssize_t w = write(2, msg, sizeof msg - 1); (void)w; }
}
