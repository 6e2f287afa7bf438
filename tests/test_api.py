"""The glibc malloc family on every shipped spec, in-process through cffi (prefixed build)."""
from __future__ import annotations

import errno
import resource
import subprocess
import sys
import textwrap

import pytest

MIB = 1 << 20


def addr(lib, p) -> int:
    return int(lib.ffi.cast("uintptr_t", p))


def fill(lib, p, n, byte):
    lib.ffi.memmove(p, bytes([byte]) * n, n)


def check_fill(lib, p, n, byte):
    assert bytes(lib.ffi.buffer(p, n)) == bytes([byte]) * n


def test_every_class_boundary(lib):
    """Each class size and its neighbours: usable >= request, 16-byte aligned, writable."""
    sizes = set()
    for c in lib.model.classes:
        sizes.update({c.size - 1, c.size, c.size + 1})
    ptrs = []
    for n in sorted(s for s in sizes if s > 0):
        p = lib.malloc(n)
        assert p != lib.ffi.NULL, n
        assert addr(lib, p) % 16 == 0, n
        assert lib.malloc_usable_size(p) >= n
        fill(lib, p, n, n & 0xFF)
        ptrs.append((p, n))
    for p, n in ptrs:
        check_fill(lib, p, n, n & 0xFF)
        lib.free(p)


def test_class_sizes_are_exact(lib):
    """A request of exactly a class size gets that class (usable == size) while small."""
    for c in lib.model.classes:
        p = lib.malloc(c.size)
        assert lib.malloc_usable_size(p) == c.size
        lib.free(p)


@pytest.mark.parametrize("k", range(0, 27))
def test_powers_of_two_plus_minus_one(lib, k):
    for n in {max(0, (1 << k) - 1), 1 << k, (1 << k) + 1}:
        p = lib.malloc(n)
        assert p != lib.ffi.NULL
        assert addr(lib, p) % 16 == 0
        assert lib.malloc_usable_size(p) >= n
        if n:
            fill(lib, p, min(n, 4096), 0x5A)
            lib.ffi.memmove(p + (n - 1), b"\x7f", 1)
            assert bytes(lib.ffi.buffer(p + (n - 1), 1)) == b"\x7f"
        lib.free(p)


ALIGNMENTS = [8, 16, 32, 64, 128, 256, 512, 1024, 4096, 8192, 65536, 1 << 20, 4 * MIB, 16 * MIB]


@pytest.mark.parametrize("align", ALIGNMENTS)
def test_alignment(lib, align):
    ffi = lib.ffi
    for n in (1, 24, 100, 3000, 40000, 3 * MIB):
        box = ffi.new("void **")
        assert lib.posix_memalign(box, align, n) == 0
        for p in (box[0], lib.aligned_alloc(align, n), lib.memalign(align, n)):
            assert p != ffi.NULL
            assert addr(lib, p) % max(align, 16) == 0, (align, n)
            assert lib.malloc_usable_size(p) >= n
            fill(lib, p, n, 0xA5)
            lib.free(p)


@pytest.mark.parametrize("align", [4096, 65536, 131072, 262144])
def test_small_aligned_blocks_share_slabs(lib, align):
    """Alignments up to the largest class whose blocks are all aligned to it (a class of whole
    units gets aligned slab starts: 256 KiB in default) come from slab classes, not one mapping
    per block (before: above a slab unit, 1000 blocks of 64 B aligned to 128 KiB were 1000
    mappings and 4000 MiB of address space)."""
    if align > lib.model.max_class_align:
        pytest.skip(f"no class of this spec has blocks aligned to {align}")
    before = mappings()
    ptrs = [lib.aligned_alloc(align, 64) for _ in range(64)]
    grown = mappings() - before        # one mapping per block: +64 (they cannot merge)
    assert all(addr(lib, p) % align == 0 for p in ptrs)
    assert all(lib.malloc_usable_size(p) >= 64 for p in ptrs)
    assert grown <= 2 + 64 * align // lib.model.segment, grown   # new segments only
    for p in ptrs:
        lib.free(p)


def mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.parametrize("align", [512 << 10, 1 * MIB, 4 * MIB, 16 * MIB])
def test_small_blocks_aligned_beyond_every_class_share_regions(lib, align):
    """Small blocks aligned beyond every slab class, up to 16 MiB (DESIGN), share regions of the
    aligned pool: 64 blocks of 64 B take a mapping per region of slots, not one each (before:
    20000 blocks aligned to 1 MiB were 20031 mappings, near the kernel's limit of 65530).
    Freed slots are reused; malloc_trim unmaps the regions once they are empty."""
    lo, hi = lib.model.pool_shifts
    if not (1 << lo) <= align <= (1 << hi) or align <= lib.model.max_class_align:
        pytest.skip(f"{align} is not an aligned-pool alignment of this spec")
    slots = lib.model.pool_slots(align.bit_length() - 1)
    before = mappings()
    ptrs = [lib.aligned_alloc(align, 64) for _ in range(64)]
    assert all(p != lib.ffi.NULL and addr(lib, p) % align == 0 for p in ptrs)
    assert all(lib.malloc_usable_size(p) >= 64 for p in ptrs)
    assert len({addr(lib, p) for p in ptrs}) == 64
    for i, p in enumerate(ptrs):
        fill(lib, p, 64, i)
    grown = mappings() - before
    assert grown <= 64 // slots + 1, grown
    for i, p in enumerate(ptrs):
        check_fill(lib, p, 64, i)
    for p in ptrs[::2]:
        lib.free(p)
    again = [lib.memalign(align, 100) for _ in range(32)]     # the freed slots, no new region
    assert mappings() - before <= grown
    assert all(addr(lib, p) % align == 0 for p in again)
    for p in ptrs[1::2] + again:
        lib.free(p)
    lib.malloc_trim(0)
    assert mappings() <= before + 1


def test_aligned_pool_block_realloc(lib):
    """realloc of a pool block: in place within its usable size, moved (contents kept) past it."""
    align = 1 << lib.model.pool_shifts[0]
    p = lib.aligned_alloc(align, 1000)
    fill(lib, p, 1000, 0x3C)
    usable = lib.malloc_usable_size(p)
    assert usable >= 1000
    assert lib.realloc(p, usable) == p and lib.realloc(p, 10) == p
    q = lib.realloc(p, usable + 5000)
    assert q != lib.ffi.NULL and q != p and lib.malloc_usable_size(q) >= usable + 5000
    check_fill(lib, q, 10, 0x3C)
    lib.free(q)


def test_posix_memalign_bad_alignment_leaves_pointer(lib):
    ffi = lib.ffi
    box = ffi.new("void **")
    sentinel = ffi.cast("void *", 0x1234)
    for bad in (0, 3, 12, 24, 4, 2):
        box[0] = sentinel
        assert lib.posix_memalign(box, bad, 16) == errno.EINVAL
        assert box[0] == sentinel


def test_aligned_alloc_rejects_non_power_of_two(lib):
    ffi = lib.ffi
    ffi.errno = 0
    assert lib.aligned_alloc(24, 100) == ffi.NULL
    assert ffi.errno == errno.EINVAL


def test_memalign_rounds_up_alignment(lib):
    p = lib.memalign(48, 100)
    assert addr(lib, p) % 64 == 0
    lib.free(p)


def test_calloc_zeroes_reused_block(lib):
    ffi = lib.ffi
    for n in (16, 200, 4000, 30000, 2 * MIB):
        p = lib.malloc(n)
        fill(lib, p, n, 0xEE)
        lib.free(p)
        q = lib.calloc(1, n)
        assert bytes(ffi.buffer(q, n)) == bytes(n)
        lib.free(q)


def test_calloc_zeroes_the_whole_usable_size(lib):
    """The slack between the request and malloc_usable_size reads as zero too (glibc and
    mimalloc clear it; before, a block that came back dirty kept up to 4 KiB of old bytes
    there)."""
    ffi = lib.ffi
    with_slack = 0
    for n in (100, 300, 5000, 300000, 2 * MIB + 100):
        p = lib.malloc(n)
        usable = lib.malloc_usable_size(p)
        with_slack += usable > n
        fill(lib, p, usable, 0xEE)
        lib.free(p)
        q = lib.calloc(1, n)
        assert bytes(ffi.buffer(q, lib.malloc_usable_size(q))) == bytes(lib.malloc_usable_size(q))
        lib.free(q)
    assert with_slack >= 3   # sizes between classes and under a page: the case this is about


def test_calloc_and_reallocarray_overflow(lib):
    ffi = lib.ffi
    big = 1 << 63
    ffi.errno = 0
    assert lib.calloc(big, 4) == ffi.NULL
    assert ffi.errno == errno.ENOMEM
    p = lib.malloc(32)
    ffi.errno = 0
    assert lib.reallocarray(p, big, 4) == ffi.NULL
    assert ffi.errno == errno.ENOMEM
    q = lib.reallocarray(p, 8, 8)
    assert q != ffi.NULL and lib.malloc_usable_size(q) >= 64
    lib.free(q)


@pytest.mark.parametrize("n", [(1 << 64) - 1, (1 << 63), (1 << 62) + 1, (1 << 48)])
def test_hostile_sizes_fail_cleanly(lib, n):
    ffi = lib.ffi
    ffi.errno = 0
    assert lib.malloc(n) == ffi.NULL
    assert ffi.errno == errno.ENOMEM
    box = ffi.new("void **")
    assert lib.posix_memalign(box, 64, n) == errno.ENOMEM
    p = lib.malloc(10)
    assert lib.realloc(p, n) == ffi.NULL      # fails, and p is still ours and intact
    lib.free(p)


@pytest.mark.parametrize("align", [1 << 62, 1 << 63])
def test_hostile_alignments_fail_cleanly(lib, align):
    """Alignments near 2^63 with huge sizes: ENOMEM, never a wrapped length (found in review:
    the size check used to wrap and unmap the whole lower address space)."""
    ffi = lib.ffi
    box = ffi.new("void **")
    for n in ((1 << 63) - 4096, (1 << 62), 1 << 40, 100):
        box[0] = ffi.cast("void *", 0x1234)
        rc = lib.posix_memalign(box, align, n)
        assert rc == errno.ENOMEM and box[0] == ffi.cast("void *", 0x1234), (align, n, rc)
        ffi.errno = 0
        assert lib.aligned_alloc(align, n) == ffi.NULL and ffi.errno == errno.ENOMEM
        assert lib.memalign(align + 1, n) == ffi.NULL


def test_zero_size_huge_alignment_is_a_real_block(lib):
    p = lib.aligned_alloc(4 << 20, 0)
    assert p != lib.ffi.NULL and addr(lib, p) % (4 << 20) == 0
    assert lib.malloc_usable_size(p) >= 1
    lib.free(p)


def test_realloc_across_small_large_boundary_keeps_contents(lib):
    ffi = lib.ffi
    small_max = lib.model.small_max
    pattern = bytes(range(256)) * (8 * MIB // 256)
    sizes = [1, 16, 100, small_max - 1, small_max, small_max + 1, 2 * small_max, MIB, 8 * MIB,
             small_max + 1, small_max, 50, 8]
    p = lib.malloc(sizes[0])
    ffi.memmove(p, pattern, sizes[0])
    prev = sizes[0]
    for n in sizes[1:]:
        q = lib.realloc(p, n)
        assert q != ffi.NULL
        keep = min(prev, n)
        assert bytes(ffi.buffer(q, keep)) == pattern[:keep], (prev, n)
        ffi.memmove(q, pattern, n)
        assert lib.malloc_usable_size(q) >= n
        p, prev = q, n
    lib.free(p)


def test_realloc_null_and_zero(lib):
    ffi = lib.ffi
    p = lib.realloc(ffi.NULL, 40)
    assert p != ffi.NULL
    assert lib.realloc(p, 0) == ffi.NULL     # glibc: frees and returns NULL


def test_large_realloc_grows_in_place_or_moves(lib):
    ffi = lib.ffi
    p = lib.malloc(MIB)
    ffi.memmove(p, b"hz" * (MIB // 2), MIB)
    for n in (2 * MIB, 5 * MIB, 17 * MIB, 3 * MIB):
        p = lib.realloc(p, n)
        assert bytes(ffi.buffer(p, 2 * 1024)) == b"hz" * 1024
    lib.free(p)


def test_free_keeps_errno(lib):
    ffi = lib.ffi
    for n in (8, 5000, 3 * MIB):
        p = lib.malloc(n)
        ffi.errno = 4242
        lib.free(p)
        assert ffi.errno == 4242
    ffi.errno = 77
    lib.free(ffi.NULL)
    assert ffi.errno == 77


def test_malloc_zero_and_free_null(lib):
    ffi = lib.ffi
    p = lib.malloc(0)
    q = lib.malloc(0)
    assert p != ffi.NULL and q != ffi.NULL and p != q
    assert lib.malloc_usable_size(p) >= 0
    lib.free(p)
    lib.free(q)
    lib.free(ffi.NULL)
    assert lib.malloc_usable_size(ffi.NULL) == 0


def test_valloc_pvalloc(lib):
    p = lib.valloc(100)
    assert addr(lib, p) % 4096 == 0
    q = lib.pvalloc(5000)
    assert addr(lib, q) % 4096 == 0 and lib.malloc_usable_size(q) >= 8192
    lib.free(p)
    lib.free(q)


def test_sized_frees_and_cfree(lib):
    for free in (lambda p, n: lib.free_sized(p, n),
                 lambda p, n: lib.free_aligned_sized(p, 64, n),
                 lambda p, n: lib.cfree(p)):
        p = lib.aligned_alloc(64, 640)
        free(p, 640)


def test_blocks_are_reused(lib):
    """A freed block comes back from the thread's cache (LIFO front tier)."""
    p = lib.malloc(48)
    lib.free(p)
    assert lib.malloc(48) == p
    lib.free(p)


def test_many_blocks_distinct_and_intact(lib):
    ffi = lib.ffi
    ptrs = {}
    for i in range(20000):
        n = 16 + (i * 37) % 3000
        p = lib.malloc(n)
        a = addr(lib, p)
        assert a not in ptrs
        ffi.memmove(p, i.to_bytes(4, "little"), 4)
        ptrs[a] = (p, i)
    for a, (p, i) in ptrs.items():
        assert int.from_bytes(bytes(ffi.buffer(p, 4)), "little") == i
        lib.free(p)


def test_mallinfo2_says_what_is_in_use(lib):
    """mallinfo2 in glibc's terms: the large blocks as mmapped bytes (hblkhd), the slab units the
    heaps hold as the heap's bytes in use (uordblks, at least the live small bytes), the rest of
    what is mapped as free (fordblks), the live large blocks (hblks); it reported zeros there
    before."""
    before = lib.mallinfo2()
    big = lib.malloc(8 << 20)
    small = [lib.malloc(1000) for _ in range(20000)]
    mid = lib.mallinfo2()
    assert mid.hblkhd >= 8 << 20
    assert mid.hblks == before.hblks + 1
    assert mid.uordblks >= 20000 * 1000
    assert mid.arena == mid.uordblks + mid.fordblks
    assert mid.usmblks >= mid.arena + mid.hblkhd
    lib.free(big)
    for p in small:
        lib.free(p)
    after = lib.mallinfo2()
    assert after.hblkhd <= mid.hblkhd - (8 << 20)
    assert after.hblks == before.hblks


def test_trim_and_mallopt_are_harmless(lib):
    ptrs = [lib.malloc(1000) for _ in range(5000)]
    for p in ptrs:
        lib.free(p)
    assert lib.malloc_trim(0) in (0, 1)
    assert lib.mallopt(1, 1) == 1
    p = lib.malloc(1000)
    lib.free(p)


def test_foreign_pointers(lib):
    """glibc's blocks reach our free/realloc/usable_size (RTLD_DEEPBIND, pre-preload memory)."""
    ffi, libc = lib.ffi, lib.libc
    policy = lib.model.checks["foreign_free"]
    if policy == "abort":
        pytest.skip("checked spec aborts on foreign pointers (tested in a subprocess)")
    p = libc.malloc(100)
    assert lib.malloc_usable_size(p) >= 100
    ffi.memmove(p, b"x" * 100, 100)
    q = lib.realloc(p, 200)
    assert bytes(ffi.buffer(q, 100)) == b"x" * 100
    if policy == "passthrough":
        lib.free(q)          # back to glibc
        r = libc.malloc(64)
        lib.free(r)


def no_core_dump():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_checked_spec_aborts_with_box_name(tmp_path, built, model):
    """Fail fast: a double free, an interior pointer and a foreign pointer each abort with a
    message that names the box (run in a child process)."""
    if not model.checks_on:
        pytest.skip("spec has no checks")
    cases = {
        "double": "p = m(64); f(p); f(p);",
        "interior": "p = m(64); f((char *)p + 16);",
        "foreign": "p = lm(64); f(p);",
        "large double": "p = m(8 << 20); f(p); f(p);",
    }
    for label, body in cases.items():
        code = textwrap.dedent(f"""
            import cffi
            ffi = cffi.FFI()
            ffi.cdef("void *hz_{model.name}_malloc(size_t); void hz_{model.name}_free(void *);"
                     "void *malloc(size_t);")
            L = ffi.dlopen({str(built.prefixed)!r}); C = ffi.dlopen(None)
            m, f, lm = L.hz_{model.name}_malloc, L.hz_{model.name}_free, C.malloc
            p = None
            exec({body.replace('(char *)p + 16', 'ffi.cast("char *", p) + 16')!r})
            print("survived")
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, preexec_fn=no_core_dump)     # the abort is expected
        assert r.returncode != 0, label
        assert "survived" not in r.stdout
        assert "box: checks" in r.stderr, (label, r.stderr)
        if label == "large double" and model.checks["foreign_free"] == "abort":   # said so
            assert "or a large block freed already" in r.stderr, r.stderr
