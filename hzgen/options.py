"""The one table of spec options: type, default, range and doc of every key.

Validation (spec.py), defaults, and the README's spec reference (docs.py) all read this table;
nothing else knows which keys exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# kinds understood by the validator
INT, SIZE, FLOAT, BOOL, STR, IDENT, CHOICE, SIZELIST, SECTION, TIERLIST, CHAIN = (
    "int", "size", "float", "bool", "str", "ident", "choice", "size-list",
    "section", "tier-list", "tier-chain")
# list-valued kinds: checked by their owners in spec.py, not by the scalar checker
LIST_KINDS = (SIZELIST, TIERLIST, CHAIN)


@dataclass(frozen=True)
class Option:
    path: str                  # dotted key, e.g. "superslab.segment"
    kind: str
    default: Any
    doc: str
    lo: float | None = None    # inclusive bounds for int/size/float
    hi: float | None = None
    choices: tuple = ()
    pow2: bool = False         # value must be a power of two
    nullable: bool = False


KIB, MIB = 1024, 1024 * 1024

OPTIONS: list[Option] = [
    Option("name", IDENT, None, "Allocator name: a C identifier (lower case, digits, `_`; at "
           "most 32 characters); never inherited through `extends`; "
           "names `generated/<name>/`, `build/<name>/` and the prefix `hz_<name>_`."),
    Option("extends", STR, None, "Path (relative to this file) of a spec to start from; this "
           "file's keys are deep-merged over it (lists are replaced, not merged).", nullable=True),
    Option("description", STR, "", "One line saying what the allocator is for (printable, at "
           "most 200 characters); never inherited through `extends`."),
    Option("threads", BOOL, True, "The allocator is used by multi-threaded programs. "
           "`false` requires `remote_free.strategy: none` and builds a non-thread-safe allocator."),
    Option("entry_align", INT, 64, "Alignment in bytes of the machine code of `malloc` and `free` "
           "(1: the compiler's choice). Their fast paths then start at a cache line: where they "
           "fell mid-line, tiny loops ran 4..9% slower.", lo=1, hi=4096, pow2=True),

    Option("size_classes", SECTION, None, "The size-class table."),
    Option("size_classes.scheme", CHOICE, "geometric",
           "`geometric` (linear up to `linear_until`, then `steps_per_doubling` classes per "
           "power of two), `explicit` (the list in `sizes`) or `profile` (the geometric table "
           "plus a class for every size the workload profile in `profile` allocates often: at "
           "least 1% of its small allocations each, as `hzgen preload` picks them).",
           choices=("geometric", "explicit", "profile")),
    Option("size_classes.profile", STR, None, "Path (relative to the file that sets it) of a "
           "workload profile written by `hzgen profile` (scheme profile).", nullable=True),
    Option("size_classes.quantum", SIZE, 16, "Every class size is a multiple of this; it is "
           "also the minimum alignment of every block.", lo=16, hi=4096, pow2=True),
    Option("size_classes.min", SIZE, 16, "Smallest class (geometric).", lo=16, hi=4096),
    Option("size_classes.linear_until", SIZE, 256, "Classes are `quantum` apart up to this "
           "size (geometric).", lo=16, hi=256 * KIB),
    Option("size_classes.steps_per_doubling", INT, 4, "Classes per power of two above "
           "`linear_until` (geometric).", lo=1, hi=16),
    Option("size_classes.sizes", SIZELIST, None, "Class sizes (explicit): integers, or "
           "`{from: A, to: B, step: S}` runs.", nullable=True),
    Option("size_classes.extra", SIZELIST, None, "Sizes added to the geometric table "
           "(integers or runs, as in `sizes`): e.g. a power of two plus a small header, which "
           "the geometric steps put a quarter too high (4096 + 16 lands in 5120).", nullable=True),
    Option("size_classes.small_max", SIZE, 32 * KIB, "Largest small request; anything above "
           "is a large object (its own mapping). This is the large-object threshold.",
           lo=256, hi=1 * MIB),

    Option("tiers", TIERLIST, None, "Cache tiers per class range, fast to slow. Ranges must "
           "cover `min..small_max` exactly. See the tier table below."),

    Option("superslab", SECTION, None, "The slab backing: segments carved into slabs."),
    Option("superslab.segment", SIZE, 4 * MIB, "Segment size and alignment (the SuperSlab); "
           "`ptr & ~(segment-1)` finds the segment header.", lo=1 * MIB, hi=64 * MIB, pow2=True),
    Option("superslab.slab", SIZE, 64 * KIB, "Slab unit (page) size; a class's slab is a run "
           "of one or more units.", lo=4 * KIB, hi=1 * MIB, pow2=True),
    Option("superslab.max_waste", FLOAT, 0.125, "Largest tail waste per slab; a class takes "
           "more units per slab until its waste is below this.", lo=0.0, hi=0.5),
    Option("superslab.max_units", INT, 8, "Most units in one class's slab.", lo=1, hi=64),

    Option("remote_free", SECTION, None, "Frees of blocks owned by another thread."),
    Option("remote_free.strategy", CHOICE, "owner_stash",
           "`none` (single-threaded builds only), `page_mpsc` (CAS onto the owning slab's "
           "remote list; the owner collects flagged slabs), `owner_stash` (per-thread batches "
           "pushed onto the owner's per-class inbox, taken with one atomic exchange).",
           choices=("none", "page_mpsc", "owner_stash")),
    Option("remote_free.batch", INT, 32, "Blocks per batch sent to an owner (owner_stash).",
           lo=1, hi=1024),
    Option("remote_free.batch_bytes", SIZE, 64 * KIB, "A batch of class size S holds at "
           "most max(1, batch_bytes / S) blocks, so an idle thread never pins much memory of "
           "other threads (owner_stash).", lo=0, hi=1 << 30),
    Option("remote_free.outbox_slots", INT, 8, "Owner/class batches a thread keeps open at "
           "once (owner_stash).", lo=1, hi=64, pow2=True),
    Option("remote_free.collect_idle_ms", INT, 0, "The purger takes the remote frees waiting "
           "in the inbox of a heap whose thread took no slow path for this long (a thread that "
           "exited, or sleeps while others free what it allocated) back to their slabs, so their "
           "memory can go back to the OS; 0: they wait for the owner. With `owner_stash` and "
           "`backing.purge_thread` (no effect without them; the purger starts once the slab heap "
           "passes 2 x `backing.max_dirty`).", lo=0, hi=60000),

    Option("large", SECTION, None, "Objects above `size_classes.small_max`: one mapping each."),
    Option("large.release", CHOICE, "immediate", "`immediate`: munmap on free; `cache`: keep "
           "up to `cache_entries` freed mappings (at most `max_cached` bytes) for reuse.",
           choices=("immediate", "cache")),
    Option("large.cache_entries", INT, 8, "Freed mappings kept (release: cache).", lo=1, hi=64),
    Option("large.max_cached", SIZE, 32 * MIB, "Bytes of freed mappings kept (release: cache); "
           "with `backing.purge_thread` each goes back `delay_ms` after it was freed.",
           lo=0, hi=1 << 40),
    Option("large.peak_share", FLOAT, 0.0, "While the purger runs, the cache may also keep "
           "this share of the most bytes the large blocks ever took at once (a program that "
           "cycles through big buffers reuses their pages instead of faulting them in again; "
           "they still go back `delay_ms` after the free). With `release: cache`; no effect without "
           "`backing.purge_thread`.", lo=0.0, hi=4.0),

    Option("backing", SECTION, None, "When memory goes back to the OS."),
    Option("backing.release", CHOICE, "delayed", "Empty slabs: `immediate` (madvise when "
           "released), `delayed` (after `delay_ms`, checked on slow paths), `never`.",
           choices=("immediate", "delayed", "never")),
    Option("backing.delay_ms", INT, 250, "Delay before empty slabs are returned (delayed).",
           lo=0, hi=60000),
    Option("backing.max_dirty", SIZE, 8 * MIB, "Most bytes of empty slabs waiting for the "
           "delayed release; past this they go back at once.", lo=0, hi=1 << 40),
    Option("backing.dirty_share", FLOAT, 0.25, "Dirty slabs may also reach this share of "
           "the slab memory in use before the oldest go back (the budget follows the heap: large "
           "while it is busy, `max_dirty` once it is freed).", lo=0.0, hi=4.0),
    Option("backing.purge_thread", BOOL, False, "A background thread returns dirty slabs "
           "(and cached large mappings) `delay_ms` after they were freed, even when no slow path "
           "runs; started once the slab heap passes 2 x `max_dirty`, the budget is exceeded or "
           "the large cache holds more than `max_dirty` (delayed, threads: true; "
           "`HZ_PURGE_THREAD=0` turns it off at run time)."),
    Option("backing.segment_cache", INT, 1, "Empty segments kept mapped (purged) for reuse.",
           lo=0, hi=64),

    Option("stats", SECTION, None, "Statistics box (`stats: off` is short for `{level: off}`)."),
    Option("stats.level", CHOICE, "off", "`off` (no code at all), `counters` (totals), "
           "`per_class` (per class and tier).", choices=("off", "counters", "per_class")),
    Option("stats.report", CHOICE, "env", "When the exit report prints: `env` (when `HZ_STATS` "
           "is `1` or `json`), `always`.", choices=("env", "always")),

    Option("checks", SECTION, None, "Fail-fast checks at box boundaries."),
    Option("checks.double_free", BOOL, False, "Abort on a double free (a bitmap per slab)."),
    Option("checks.invalid_free", BOOL, False, "Abort on a free of a pointer that is not the "
           "start of a block of ours (interior pointers, freed slabs)."),
    Option("checks.foreign_free", CHOICE, "passthrough", "Pointers that are not ours: "
           "`passthrough` (hand to glibc), `ignore` (leak), `abort`.",
           choices=("passthrough", "ignore", "abort")),
]

# Keys of one entry of `tiers:`
TIER_OPTIONS: list[Option] = [
    Option("range", SIZELIST, None, "`[lo, hi]` request sizes (inclusive) this entry covers."),
    Option("chain", CHAIN, None, "Tiers fast to slow: any order of `ring` and `sll` (each at most "
           "once, at least one), ending in `superslab`."),
    Option("ring", SECTION, None, "Array stack per class (no write into the block)."),
    Option("ring.capacity", INT, 64, "Blocks per class; a power of two.", lo=1, hi=4096, pow2=True),
    Option("ring.refill_batch", INT, 32, "Blocks moved in on a miss.", lo=1, hi=4096),
    Option("ring.drain_batch", INT, 32, "Blocks moved out when full.", lo=1, hi=4096),
    Option("ring.max_bytes", SIZE, 0, "Per-class byte budget: a class of size S holds at most "
           "max(1, max_bytes / S) blocks (0: no budget, `capacity` for every class).",
           lo=0, hi=1 << 30),
    Option("sll", SECTION, None, "Intrusive singly-linked free list per class."),
    Option("sll.capacity", INT, 256, "Blocks per class.", lo=1, hi=65535),
    Option("sll.refill_batch", INT, 32, "Blocks moved in on a miss.", lo=1, hi=4096),
    Option("sll.drain_batch", INT, 64, "Blocks moved out when full.", lo=1, hi=4096),
    Option("sll.max_bytes", SIZE, 0, "Per-class byte budget, as for ring.", lo=0, hi=1 << 30),
    Option("sll.slow_start", BOOL, False, "When the sll is the last tier: a class's refills "
           "from the slabs start at 4 blocks and double up to `refill_batch` (again after each "
           "thread exit), so short-lived threads do not pull in batches they never use."),
]

CACHE_TIERS = ("ring", "sll")
TIER_KINDS = CACHE_TIERS + ("superslab",)


def children(table: list[Option], section: str | None) -> dict[str, Option]:
    """Direct child options of a section ("" or None = top level)."""
    out = {}
    for o in table:
        parent, _, leaf = o.path.rpartition(".")
        if parent == (section or ""):
            out[leaf] = o
    return out

