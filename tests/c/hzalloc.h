/*
 * hzalloc.h - allocation-call glue for the hzgen C test programs.
 *
 * Plain build (no HZ_PREFIX): XMALLOC & co. call the normal libc names, so the
 * programs exercise whatever malloc is active (glibc, or an LD_PRELOADed
 * override library).
 *
 * Prefixed build (-DHZ_PREFIX=hz_default_): XMALLOC & co. call
 * hz_default_malloc, hz_default_free, ... which must be provided by the
 * library linked into the program (same signatures as libc).
 *
 * Every allocation the tests make on purpose goes through these macros;
 * libc-internal allocations (pthread_create, stdio, ...) still use the
 * process-wide malloc.
 */
#ifndef HZALLOC_H
#define HZALLOC_H

#include <stddef.h>
#include <stdlib.h>

#define HZ_CAT2(a, b) a##b
#define HZ_CAT(a, b) HZ_CAT2(a, b)
#define HZ_STR2(x) #x
#define HZ_STR(x) HZ_STR2(x)

#ifdef HZ_PREFIX

#ifdef __cplusplus
extern "C" {
#endif
void *HZ_CAT(HZ_PREFIX, malloc)(size_t size);
void HZ_CAT(HZ_PREFIX, free)(void *ptr);
void *HZ_CAT(HZ_PREFIX, calloc)(size_t nmemb, size_t size);
void *HZ_CAT(HZ_PREFIX, realloc)(void *ptr, size_t size);
int HZ_CAT(HZ_PREFIX, posix_memalign)(void **memptr, size_t alignment, size_t size);
void *HZ_CAT(HZ_PREFIX, aligned_alloc)(size_t alignment, size_t size);
size_t HZ_CAT(HZ_PREFIX, malloc_usable_size)(void *ptr);
#ifdef __cplusplus
}
#endif

#define XMALLOC(n) HZ_CAT(HZ_PREFIX, malloc)(n)
#define XFREE(p) HZ_CAT(HZ_PREFIX, free)(p)
#define XCALLOC(n, s) HZ_CAT(HZ_PREFIX, calloc)(n, s)
#define XREALLOC(p, n) HZ_CAT(HZ_PREFIX, realloc)(p, n)
#define XPOSIX_MEMALIGN(pp, a, n) HZ_CAT(HZ_PREFIX, posix_memalign)(pp, a, n)
#define XALIGNED_ALLOC(a, n) HZ_CAT(HZ_PREFIX, aligned_alloc)(a, n)
#define XUSABLE_SIZE(p) HZ_CAT(HZ_PREFIX, malloc_usable_size)(p)
#define HZ_ALLOC_NAME HZ_STR(HZ_PREFIX) "*"

#else /* !HZ_PREFIX */

#include <malloc.h> /* malloc_usable_size */

#define XMALLOC(n) malloc(n)
#define XFREE(p) free(p)
#define XCALLOC(n, s) calloc(n, s)
#define XREALLOC(p, n) realloc(p, n)
#define XPOSIX_MEMALIGN(pp, a, n) posix_memalign(pp, a, n)
#define XALIGNED_ALLOC(a, n) aligned_alloc(a, n)
#define XUSABLE_SIZE(p) malloc_usable_size(p)
#define HZ_ALLOC_NAME "libc malloc"

#endif /* HZ_PREFIX */

#endif /* HZALLOC_H */
