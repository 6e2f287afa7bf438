"""Stage 2: resolve a validated spec into the model the templates render.

Everything the C needs is decided here: the size-class table with each class's slab geometry,
the size->class lookup table, the tier chain of every class range, and the constants of every box.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import __version__
from .spec import Spec, SpecError

# Bytes of segment header per slab unit (slab metadata + state byte), and the fixed part;
# the C _Static_asserts that its real header fits in the pages reserved from this estimate.
UNIT_META_BYTES = 128
HEADER_FIXED_BYTES = 256
OS_PAGE = 4096
# the aligned pool serves alignments up to 2^24 = 16 MiB (DESIGN: "at least 16 MiB"); above, a
# block is a mapping of its own
POOL_MAX_SHIFT = 24
POOL_REGION_MAX = 64 << 20   # address space a pool region reserves, at most (or one segment)


@dataclass(frozen=True)
class SizeClass:
    index: int
    size: int
    units: int            # slab units per slab
    slab_bytes: int
    blocks: int           # blocks per slab
    waste_pct: float
    range_index: int
    slab_align_units: int = 1   # its slabs start at a multiple of this many units
    align: int = 16             # every block of it is aligned to this (aligned allocations)


@dataclass(frozen=True)
class Tier:
    kind: str             # ring | sll
    capacity: int         # array size (ring) / largest per-class limit
    caps: tuple           # per class of the range: blocks held at most (max_bytes budget)
    refills: tuple        # per class: blocks moved in on a miss
    drains: tuple         # per class: blocks moved out when full
    slow_start: bool = False   # sll: refills from the slabs start small and double (per heap)

    @property
    def uniform(self) -> bool:
        return len(set(self.caps)) == 1 and len(set(self.refills)) == 1 and len(set(self.drains)) == 1


def byte_bounded(limit: int, budget: int, size: int) -> int:
    """At most `limit` blocks of `size`, and at most `budget` bytes of them (never below one);
    budget 0 means no byte bound."""
    return min(limit, max(1, budget // size)) if budget else limit


def make_tier(kind: str, params: dict, sizes: list) -> Tier:
    cap, budget = params["capacity"], params["max_bytes"]
    caps = tuple(byte_bounded(cap, budget, s) for s in sizes)
    # a batch never moves more than half of a class's limit, so a full or empty tier keeps
    # (or gets) some blocks in both directions instead of thrashing between 0 and the limit
    return Tier(kind, cap, caps,
                tuple(max(1, min(params["refill_batch"], (c + 1) // 2)) for c in caps),
                tuple(max(1, min(params["drain_batch"], (c + 1) // 2)) for c in caps),
                bool(params.get("slow_start")))


@dataclass(frozen=True)
class TierRange:
    index: int
    lo: int
    hi: int
    first_class: int
    last_class: int       # inclusive
    caches: tuple         # Tier, fast to slow; the superslab follows the last one

    @property
    def nclasses(self) -> int:
        return self.last_class - self.first_class + 1

    @property
    def chain(self) -> tuple:
        return tuple(t.kind for t in self.caches) + ("superslab",)

    @property
    def cache_bytes(self) -> int:
        """sizeof(hz_cache_rN) on LP64, as hz_internal.h lays it out (the C asserts it):
        a ring is {u32 n, cap; void *slot[capacity]}, an sll {void *head; i32 room; u32 batch}."""
        return sum(8 + 8 * t.capacity if t.kind == "ring" else 16 for t in self.caches)


@dataclass
class Model:
    name: str
    version: str
    spec_digest: str
    threads: bool
    entry_align: int      # alignment of malloc's and free's machine code (1: the compiler's)
    quantum: int
    small_max: int
    classes: list
    lookup: list          # index (n + quantum - 1) // quantum -> class
    ranges: list
    segment: int
    slab: int
    header_units: int
    remote: dict
    large: dict
    backing: dict
    stats: dict
    checks: dict
    raw: dict = field(repr=False, default_factory=dict)

    def range_offset(self, r: TierRange) -> int:
        """offsetof(hz_heap, rN): the range arrays come first in the heap, in order."""
        return sum(x.cache_bytes * x.nclasses for x in self.ranges[:r.index])

    @property
    def cache_offsets(self) -> list:
        """Byte offset of each class's cache in a heap: malloc indexes the heap with it directly."""
        out = []
        for c in self.classes:
            r = self.ranges[c.range_index]
            out.append(self.range_offset(r) + (c.index - r.first_class) * r.cache_bytes)
        return out

    @property
    def remote_batches(self) -> list:
        """Per class: blocks an owner_stash batch holds before it is sent (a byte bound)."""
        return [byte_bounded(self.remote["batch"], self.remote["batch_bytes"], c.size)
                for c in self.classes]

    @property
    def units_per_segment(self) -> int:
        return self.segment // self.slab

    @property
    def max_class_units(self) -> int:
        return max(c.units for c in self.classes)

    @property
    def max_class_align(self) -> int:
        return max(c.align for c in self.classes)

    @property
    def pool_header_offset(self) -> int:
        """Where an aligned-pool region keeps its header: in slot 0, past the largest small
        block (a page-rounded small_max)."""
        return -(-self.small_max // OS_PAGE) * OS_PAGE

    @property
    def pool_shifts(self) -> tuple[int, int]:
        """log2 of the smallest and largest alignment the aligned pool serves (small blocks
        aligned beyond every class): above the classes' alignments, past slot 0's header page,
        and at most 64 slots to a segment; up to 16 MiB (DESIGN's floor) or that minimum."""
        need = max(2 * self.max_class_align, self.pool_header_offset + OS_PAGE, self.segment // 64)
        lo = (need - 1).bit_length()
        return lo, max(lo, POOL_MAX_SHIFT)

    def pool_slots(self, shift: int) -> int:
        """Slots of a pool region for alignment 2^shift: 32, more when that is less than a
        segment (a region covers whole registry granules), fewer when it is more than 64 MiB
        of address space (a 16 MiB alignment: 4 slots, not a 512 MiB reservation)."""
        align = 1 << shift
        if 32 * align < self.segment:
            return self.segment // align
        return max(1, min(32, max(POOL_REGION_MAX, self.segment) // align))

    @property
    def stats_on(self) -> bool:
        return self.stats["level"] != "off"

    @property
    def collect_on(self) -> bool:
        """The purger collects the inboxes of idle or exited heaps (their slab lists get a lock):
        an add-on of owner_stash and the purger, off without either (so a spec that extends one
        with it and turns them off needs no override)."""
        return bool(self.remote.get("collect_idle_ms") and self.remote["strategy"] == "owner_stash"
                    and self.backing["purge_thread"])

    @property
    def checks_on(self) -> bool:
        return self.checks["double_free"] or self.checks["invalid_free"]


def class_alignment(size: int, units: int, slab: int, units_per_segment: int,
                    header_units: int) -> tuple[int, int]:
    """(slab_align_units, block alignment) of a class: blocks sit `size` apart from the slab
    start, so they are aligned to the largest power of two dividing `size` if the slab start
    is; starts are unit-aligned, and a class of whole units gets starts aligned further (as far
    as a segment allows), so an aligned allocation up to the largest such class is one block of
    a slab, not a mapping of its own."""
    p2 = size & -size
    a = max(1, p2 // slab)
    while a > 1 and -(-header_units // a) * a + units > units_per_segment:
        a //= 2
    return a, min(p2, a * slab)


def slab_geometry(size: int, slab: int, max_units: int, max_waste: float, usable_units: int):
    """Units per slab for a class: the fewest whose tail waste is within max_waste
    (tcmalloc-style), else the least wasteful; returns (units, blocks, waste fraction)."""
    best = None
    for units in range(1, min(max_units, usable_units) + 1):
        total = units * slab
        blocks = total // size
        if blocks == 0:
            continue
        waste = (total - blocks * size) / total
        if waste <= max_waste:
            return units, blocks, waste
        if best is None or waste < best[2] - 1e-12:
            best = (units, blocks, waste)
    return best


def resolve(spec: Spec) -> Model:
    d = spec.data
    sc, ss = d["size_classes"], d["superslab"]
    segment, slab = ss["segment"], ss["slab"]
    units = segment // slab
    header_bytes = HEADER_FIXED_BYTES + units * UNIT_META_BYTES
    if d["checks"]["double_free"]:
        # live bits of the double-free check: whole 64-bit words per unit
        header_bytes += units * 8 * -(-(slab // sc["quantum"]) // 64)
    header_units = -(-header_bytes // slab)
    usable = units - header_units
    if usable < 1:
        raise SpecError([f"{spec.where.get(('superslab',), spec.path)}: superslab: the segment "
                         "header fills the whole segment; use a larger segment"])

    ranges, classes = [], []
    sizes = sc["sizes"]
    for ri, t in enumerate(d["tiers"]):
        lo, hi = t["range"]
        members = [s for s in sizes if lo <= s <= hi] if ri else [s for s in sizes if s <= hi]
        if not members:
            where = spec.where.get(("tiers", ri, "range"))
            raise SpecError([f"{where}: tiers[{ri}].range: contains no size class"])
        first = len(classes)
        for s in members:
            geo = slab_geometry(s, slab, ss["max_units"], ss["max_waste"], usable)
            if geo is None:
                raise SpecError([f"{spec.where.get(('superslab',))}: superslab: class {s} does "
                                 f"not fit in {usable} usable slab units"])
            u, blocks, waste = geo
            classes.append(SizeClass(len(classes), s, u, u * slab, blocks,
                                     round(waste * 100, 2), ri,
                                     *class_alignment(s, u, slab, units, header_units)))
        caches = tuple(make_tier(k, t[k], members) for k in t["chain"][:-1])
        ranges.append(TierRange(ri, lo, hi, first, len(classes) - 1, caches))

    q = sc["quantum"]
    lookup, ci = [], 0
    for i in range(sc["small_max"] // q + 1):
        n = i * q
        while classes[ci].size < n:
            ci += 1
        lookup.append(ci)

    return Model(
        name=d["name"], version=__version__, spec_digest=spec.digest(),
        threads=d["threads"], entry_align=d["entry_align"], quantum=q, small_max=sc["small_max"],
        classes=classes, lookup=lookup, ranges=ranges,
        segment=segment, slab=slab, header_units=header_units,
        remote=dict(d["remote_free"]), large=dict(d["large"]), backing=dict(d["backing"]),
        stats=dict(d["stats"]), checks=dict(d["checks"]), raw=d,
    )
