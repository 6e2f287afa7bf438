"""The model: size classes, lookup table, slab geometry and tier chains of every shipped spec."""
from __future__ import annotations

import pytest

from hzgen.model import slab_geometry


def class_of(m, n):
    return m.lookup[(n + m.quantum - 1) // m.quantum]


def test_every_size_maps_to_the_smallest_fitting_class(model):
    sizes = [c.size for c in model.classes]
    for n in range(0, model.small_max + 1):
        c = class_of(model, n)
        assert sizes[c] >= n
        assert c == 0 or sizes[c - 1] < n, n


def test_classes_keep_alignment_and_fit_their_slabs(model):
    for c in model.classes:
        assert c.size % model.quantum == 0
        assert c.blocks >= 1 and c.blocks * c.size <= c.slab_bytes
        assert c.slab_bytes == c.units * model.slab
        assert 0 <= c.waste_pct <= 100 * max(model.raw["superslab"]["max_waste"], 0.5)


def test_tier_ranges_partition_the_classes(model):
    seen = []
    for r in model.ranges:
        seen.extend(range(r.first_class, r.last_class + 1))
        assert r.chain[-1] == "superslab"
        for t in r.caches:
            assert len(t.caps) == r.nclasses
            assert all(1 <= cap <= t.capacity for cap in t.caps)
            assert all(1 <= b <= cap for b, cap in zip(t.refills, t.caps))
    assert seen == list(range(len(model.classes)))
    assert model.ranges[-1].hi == model.small_max


def test_aligned_pool_starts_past_every_class_and_slot_zero_header(model):
    """The aligned pool takes over where the classes' alignments end, its slot 0 holds a small
    block and the region header, a segment has at most 64 slots, and it reaches 16 MiB."""
    lo, hi = model.pool_shifts
    assert (1 << lo) > model.max_class_align
    assert (1 << lo) >= model.pool_header_offset + 4096 >= model.small_max + 4096
    assert model.segment >> lo <= 64
    assert hi >= 24
    for shift in range(lo, hi + 1):
        slots = model.pool_slots(shift)
        assert 1 <= slots <= 64
        assert model.segment <= slots << shift <= max(64 << 20, model.segment)


def test_slab_geometry_keeps_waste_under_the_bound():
    units, blocks, waste = slab_geometry(24576, 65536, 8, 0.125, 63)
    assert (units, blocks) == (2, 5) and waste <= 0.125
    assert slab_geometry(16, 65536, 8, 0.125, 63) == (1, 4096, 0.0)


def test_byte_budget_scales_caches_by_size(model):
    for r in model.ranges:
        for t in r.caches:
            caps = t.caps
            assert list(caps) == sorted(caps, reverse=True)   # bigger classes never hold more


def test_hz3_like_geometry():
    from hzgen.pipeline import load_model
    from conftest import REPO
    m = load_model(REPO / "specs" / "hz3-like.yaml")
    sizes = [c.size for c in m.classes]
    assert sizes[:128] == list(range(16, 2049, 16))
    assert sizes[128:] == list(range(4096, 65537, 4096))
    for c in m.classes[128:]:
        assert c.units == c.size // 4096 and c.blocks == 1 and c.waste_pct == 0  # page runs
    assert m.remote["strategy"] == "owner_stash"


@pytest.mark.parametrize("name,chains", [
    ("tiny-ring", [("ring", "sll", "superslab"), ("sll", "superslab")]),
    ("default", [("sll", "superslab"), ("ring", "superslab")]),
])
def test_chains(name, chains):
    from hzgen.pipeline import load_model
    from conftest import REPO
    m = load_model(REPO / "specs" / f"{name}.yaml")
    assert [r.chain for r in m.ranges] == chains
