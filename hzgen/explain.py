"""`hzgen explain SPEC`: the allocator a spec describes, in words and tables.

Everything is read from the resolved model (hzgen.model), the same data the templates render,
so the text cannot drift from the generated C. Sections: the boxes, the boundaries between
them, each class range's tier chain with its per-class capacities and batch sizes (the caps a
`max_bytes` budget gives, model.Tier.caps), the malloc and free fast paths step by step, and
what the spec switched off.

The functions `facts`, `class_signature` and `range_chain` are also the vocabulary of
`hzgen diff` (hzgen/diff.py), which compares two models item by item.
"""
from __future__ import annotations

import argparse

from .model import Model, Tier, TierRange
from .spec import fmt_size
from .tool import guarded, runs, table


def size_text(n: int) -> str:
    """Bytes as `4MiB` when exact, else plain bytes."""
    return fmt_size(n) if n >= 1024 else f"{n} B"


def tier_text(t: Tier, i: int | None = None) -> str:
    """`sll 256/32/128`: kind, then capacity/refill/drain for class i of the range
    (or the configured capacity and batch range when i is None)."""
    if i is not None:
        return f"{t.kind} {t.caps[i]}/{t.refills[i]}/{t.drains[i]}"
    def span(v):
        return f"{min(v)}" if min(v) == max(v) else f"{min(v)}..{max(v)}"
    return f"{t.kind} {span(t.caps)}/{span(t.refills)}/{span(t.drains)}"


def class_signature(m: Model, ci: int) -> str:
    """The tier chain of one class with its per-class cap/refill/drain."""
    c = m.classes[ci]
    r = m.ranges[c.range_index]
    i = ci - r.first_class
    return " -> ".join([tier_text(t, i) for t in r.caches] + ["superslab"])


def range_chain(r: TierRange) -> str:
    return f"[{r.lo}..{r.hi}] " + " -> ".join([tier_text(t) for t in r.caches] + ["superslab"])


def class_span(m: Model, i: int, j: int) -> str:
    """`16..1024 B (classes 0..23)` for classes i..j."""
    lo, hi = m.classes[i].size, m.classes[j].size
    sizes = f"{lo} B" if i == j else f"{lo}..{hi} B"
    return f"{sizes} (class {i})" if i == j else f"{sizes} (classes {i}..{j})"


# ---------------------------------------------------------------- the boxes

def _remote_text(m: Model) -> str:
    r = m.remote
    if r["strategy"] == "owner_stash":
        collect = (f"; the purger gives the inboxes of a heap whose thread took no slow path "
                   f"for {r['collect_idle_ms']} ms (or exited) to its slabs, under the heap's slab "
                   "lock" if m.collect_on else "")
        return (f"owner_stash: a thread frees another heap's block into its outbox (one of "
                f"{r['outbox_slots']} open (owner, class) batches); at {r['batch']} blocks the batch "
                "goes onto the owner's per-class inbox with one CAS; the owner takes a whole inbox "
                f"with one atomic exchange when its tier 0 misses{collect}")
    if r["strategy"] == "page_mpsc":
        return ("page_mpsc: a thread frees another heap's block with a CAS onto the owning slab's "
                "xfree list (mimalloc-style); blocks of a full slab go to the owner heap's delayed "
                "list; the owner collects both on its slow paths")
    return "none: threads: false, there is one heap and every free is local"


def _large_text(m: Model) -> str:
    L = m.large
    lo, hi = m.pool_shifts
    head = (f"requests above {size_text(m.small_max)}: one mapping each, starting at a segment "
            f"boundary (header in front) and mapping what it needs in units of "
            f"{size_text(m.segment // 64)} (the rest of its last segment-sized piece is address "
            "space for anyone); ")
    pool = (f"; small blocks aligned beyond every class ({size_text(1 << lo)} .. "
            f"{size_text(1 << hi)}) share regions of slots (the aligned pool), larger alignments "
            "get a mapping each")
    if L["release"] == "cache":
        decay = (f"; the purger unmaps them {m.backing['delay_ms']} ms after they were freed"
                 if m.backing["purge_thread"] else "")
        grow = (f", or while the purger runs {L['peak_share']:g} x the most bytes large blocks "
                "ever took at once" if L.get("peak_share") and m.backing["purge_thread"] else "")
        return head + (f"freed mappings cached for reuse (up to {L['cache_entries']} mappings, "
                       f"{size_text(L['max_cached'])}{grow}; oldest evicted first{decay})") + pool
    return head + "munmap on free" + pool


def _backing_text(m: Model) -> str:
    b = m.backing
    rel = {"immediate": "empty slabs are madvised back to the OS at once",
           "delayed": f"empty slabs go back to the OS {b['delay_ms']} ms after they empty "
                      f"(checked on slow paths), at once past {size_text(b['max_dirty'])} waiting",
           "never": "empty slabs are never returned to the OS"}[b["release"]]
    if b.get("purge_thread"):
        rel += (f"; once the slab heap passes {size_text(2 * b['max_dirty'])} a purger thread "
                "(started from an allocation miss, HZ_PURGE_THREAD=0 turns it off) returns them "
                "on time even with no allocator activity, and frees stop purging; it never "
                "outlives the program's threads")
    return f"{rel}; {b['segment_cache']} empty segment(s) kept mapped for reuse"


def _stats_text(m: Model) -> str:
    s = m.stats
    if s["level"] == "off":
        return "off: compiled out (no counters, no report code)"
    when = "always" if s["report"] == "always" else "when HZ_STATS=1 (text) or HZ_STATS=json"
    what = "per class" if s["level"] == "per_class" else "totals"
    return (f"{s['level']}: counters {what} in each heap (plain adds, no atomics); "
            f"one report at exit {when}, to stderr or HZ_STATS_FILE")


def _checks_text(m: Model) -> str:
    c = m.checks
    parts = []
    if c["double_free"]:
        parts.append("double_free: a live bit per block, set at the alloc boundary and cleared "
                     "at the free boundary; a clear bit on free aborts")
    if c["invalid_free"]:
        parts.append("invalid_free: a freed pointer must be the start of a block of a used slab")
    foreign = {"passthrough": "handed to glibc's free", "ignore": "ignored (leaked)",
               "abort": "abort with a message"}[c["foreign_free"]]
    parts.append(f"foreign pointers: {foreign}")
    if not m.checks_on:
        parts.insert(0, "off: frees are trusted (no double-free or invalid-free checks)")
    return "; ".join(parts)


def boxes(m: Model) -> list[tuple[str, str]]:
    nr = len(m.ranges)
    if m.threads:
        front = (f"a per-thread heap (TLS, initial-exec) with the cache tiers of every class; "
                 f"{len(m.classes)} classes in {nr} range{'s' * (nr > 1)}")
    else:
        front = (f"one global heap (threads: false: no TLS, not thread-safe) with the cache tiers "
                 f"of every class; {len(m.classes)} classes in {nr} range{'s' * (nr > 1)}")
    if m.entry_align > 1:
        front += f"; malloc's and free's code starts at a multiple of {m.entry_align} bytes"
    units = m.units_per_segment
    superslab = (f"segments of {size_text(m.segment)}, aligned to their size (ptr & ~(segment-1) "
                 f"finds the header), carved into {units} slab units of {size_text(m.slab)}; "
                 f"a class's slab is 1..{m.raw['superslab']['max_units']} units (tail waste "
                 f"<= {m.raw['superslab']['max_waste'] * 100:g}%); the header takes "
                 f"{m.header_units} unit(s); a registry byte per segment-sized piece of address "
                 "space tells small, large and foreign pointers apart")
    return [("front", front), ("superslab", superslab), ("remote free", _remote_text(m)),
            ("large", _large_text(m)), ("backing/OS", _backing_text(m)),
            ("stats", _stats_text(m)), ("checks", _checks_text(m))]


# what each boundary is; boundaries(m) says where it leads in this allocator
BOUNDARY_DOC = {
    "refill": "tier 0 empty -> hz_alloc_miss: collect remote frees, then each tier takes a "
              "batch from the one below (hz_slab_take from the superslab)",
    "drain": "a tier full on free -> a batch moves to the tier below (hz_slab_give into the "
             "superslab)",
    "remote": "free of a block another heap owns",
    "too-large": "malloc of more than small_max",
    "foreign pointer": "free(p) whose registry kind is not small (with several class ranges: "
                       "not the first range's) -> hz_free_slow: NULL is a no-op, the other "
                       "ranges' segments -> their tiers, large -> large box (past a large block's "
                       "mapping, in its last segment-sized piece: foreign), anything else",
}


def boundaries(m: Model) -> list[tuple[str, str]]:
    refill, drain = [], []
    for r in m.ranges:
        kinds = [t.kind for t in r.caches] + ["superslab"]
        refill.append(f"[{r.lo}..{r.hi}] " + " <- ".join(kinds))
        drain.append(f"[{r.lo}..{r.hi}] " + " -> ".join(kinds))
    foreign = {"passthrough": "__libc_free (glibc)", "ignore": "dropped (leaked)",
               "abort": "abort with a message"}[m.checks["foreign_free"]]
    return [
        ("refill", "; ".join(refill)),
        ("drain", "; ".join(drain)),
        ("remote", f"hz_free_remote ({m.remote['strategy']})" if m.threads
         else "none (threads: false: every free is local)"),
        ("too-large", f"n > {m.small_max} -> hz_large_alloc (large box)"),
        ("foreign pointer", foreign),
    ]


# ---------------------------------------------------------------- the fast paths

def fast_paths(m: Model) -> dict[str, list[str]]:
    q = m.quantum
    heap = "h = hz_tls_heap (one TLS load)" if m.threads else "h = &hz_main_heap (no TLS)"
    multi = len(m.ranges) > 1
    if multi:   # the size compare that sends large sizes away also picks the range
        split = ", ".join(f"n <= {r.hi} -> range {r.index}" for r in m.ranges)
        first = f"pick the range by size: {split}, else -> hz_large_alloc (too-large boundary)"
    else:
        first = f"n <= {m.small_max}? else -> hz_large_alloc (too-large boundary)"
    alloc = [first,
             f"off = hz_cache_off_q[(n + {q - 1}) >> {q.bit_length() - 1}]: the class's cache "
             f"in the heap (a table of {len(m.lookup)} entries; the class itself is looked up on "
             "a miss only)",
             heap]
    seg = m.segment.bit_length() - 1
    free = [f"hz_segmap[p >> {seg}] == small (range 0's segments)? else -> hz_free_slow (the "
            "other ranges' segments: these steps with the class range of slab->cls; NULL, large, "
            "foreign pointer boundary)" if multi else
            f"hz_segmap[p >> {seg}] == small? else -> hz_free_slow "
            "(NULL, large, foreign pointer boundary)"]
    if m.stats_on:
        alloc.append("stats: alloc[cls] += 1")
    pops = []
    for r in m.ranges:
        t = r.caches[0]
        how = ("n? slot[--n] : NULL (array stack)" if t.kind == "ring"
               else "b = head; if b: head = b->next, n-- (intrusive list)")
        pops.append(f"range {r.index}: {t.kind} {how}")
    alloc.append("pop tier 0: " + "; ".join(pops))
    hit = "hit: return the block"
    if m.checks_on:
        hit = "hit: hz_check_alloc (mark the block live: alloc boundary), return it"
    alloc.append(hit)
    alloc.append("miss -> hz_alloc_miss (refill boundary): " + (
        "a thread's first call adopts or maps a heap; " if m.threads else "") + (
        "flush outgoing remote batches; " if m.remote["strategy"] == "owner_stash" else "") +
        "collect remote frees; refill tier 0 down the chain (a new slab may first purge "
        "slabs whose release delay has passed)")
    if m.checks_on:
        free.append("hz_check_free (free boundary): slab in use"
                    + (", p is a block start" if m.checks["invalid_free"] else "")
                    + (", live bit set (else double free)" if m.checks["double_free"] else ""))
    free.append(f"slab = segment header slab[(p >> {m.slab.bit_length() - 1}) & "
                f"{m.units_per_segment - 1}]")
    free.append(heap)
    if m.threads:
        free.append("slab owner == h? else -> hz_free_remote (remote boundary)")
    if m.stats_on:
        free.append("stats: free[cls] += 1")
    free.append("tier 0 full (n >= cap[cls])? -> drain a batch down first (drain boundary)")
    free.append("push on tier 0 (" + {"ring": "slot[n++] = p", "sll": "p->next = head, head = p, "
                                      "n++"}[m.ranges[0].caches[0].kind] + ")")
    return {"malloc": alloc, "free": free}


def switched_off(m: Model) -> list[str]:
    off = []
    if not m.stats_on:
        off.append("stats: off (no counters on any path, no exit report)")
    if not m.checks["double_free"]:
        off.append("checks.double_free: off (no live bitmap)")
    if not m.checks["invalid_free"]:
        off.append("checks.invalid_free: off (frees of our pointers are trusted)")
    if m.checks["foreign_free"] == "ignore":
        off.append("foreign pointers: ignored (leaked), never freed")
    for kind in ("ring", "sll"):
        if not any(t.kind == kind for r in m.ranges for t in r.caches):
            off.append(f"no {kind} tier in any class range (no {kind} code)")
    if not m.threads:
        off.append("threads: false (no TLS, no owner check, no atomics on the fast paths; "
                   "not thread-safe)")
    if m.remote["strategy"] == "none":
        off.append("remote_free: none (no remote-free box)")
    if m.large["release"] == "immediate":
        off.append("large cache: off (munmap on every large free)")
    if m.backing["release"] == "never":
        off.append("backing release: never (empty slabs stay resident)")
    if m.backing["segment_cache"] == 0:
        off.append("segment cache: off (empty segments are unmapped)")
    return off or ["nothing: every optional box is on"]


# ---------------------------------------------------------------- summary facts (diff)

def facts(m: Model) -> list[tuple[str, str]]:
    """One line per model item that hzgen diff compares (class table and per-class tiers are
    compared separately)."""
    sc = m.raw["size_classes"]
    b, L, s, c, r = m.backing, m.large, m.stats, m.checks, m.remote
    out = [
        ("name", m.name),
        ("description", m.raw.get("description", "")),
        ("threads", "yes" if m.threads else "no"),
        ("size classes", f"{len(m.classes)} classes {m.classes[0].size}..{m.small_max} B, "
                         f"{sc['scheme']}, quantum {m.quantum}"
                         + (f", extra {' '.join(map(str, sc['extra']))}" if sc.get("extra") else "")
                         + (f", from the profile {' '.join(map(str, sc['profile_sizes'])) or 'nothing'}"
                            if sc["scheme"] == "profile" else "")),
        ("superslab", f"segment {size_text(m.segment)}, slab unit {size_text(m.slab)}, "
                      f"max_units {m.raw['superslab']['max_units']}, max_waste "
                      f"{m.raw['superslab']['max_waste']:g}, header {m.header_units} unit(s)"),
        ("remote_free", r["strategy"] + (f", batch {r['batch']}, outbox_slots {r['outbox_slots']}"
                                         if r["strategy"] == "owner_stash" else "")),
        ("large", L["release"] + (f", {L['cache_entries']} entries, {size_text(L['max_cached'])}"
                                  if L["release"] == "cache" else "")),
        ("backing", b["release"] + (f", delay {b['delay_ms']} ms, max_dirty {size_text(b['max_dirty'])}"
                                    if b["release"] == "delayed" else "")
         + f", segment_cache {b['segment_cache']}"),
        ("stats", s["level"] + ("" if s["level"] == "off" else f", report {s['report']}")),
        ("checks", f"double_free {'on' if c['double_free'] else 'off'}, invalid_free "
                   f"{'on' if c['invalid_free'] else 'off'}, foreign_free {c['foreign_free']}"),
    ]
    out += [(f"boundary {k}", v) for k, v in boundaries(m)]
    return out


# ---------------------------------------------------------------- the report

def range_table(m: Model, r: TierRange) -> list[str]:
    members = list(range(r.first_class, r.last_class + 1))
    header = ["sizes", "classes", "blocks/slab"]
    for t in r.caches:
        header += [f"{t.kind} cap", "refill", "drain"]

    def key(ci):
        i = ci - r.first_class
        return tuple((t.caps[i], t.refills[i], t.drains[i]) for t in r.caches)

    rows = []
    for a, b in runs(members, key):
        ca, cb = members[a], members[b]
        blocks = {m.classes[ci].blocks for ci in range(ca, cb + 1)}
        row = [f"{m.classes[ca].size}" if a == b else f"{m.classes[ca].size}..{m.classes[cb].size}",
               f"{ca}" if a == b else f"{ca}..{cb}",
               f"{min(blocks)}" if len(blocks) == 1 else f"{min(blocks)}..{max(blocks)}"]
        for t in r.caches:
            i = ca - r.first_class
            row += [t.caps[i], t.refills[i], t.drains[i]]
        rows.append(row)
    return table(header, rows, right=set(range(2, len(header))), indent="    ")


def explain(m: Model, spec: str) -> str:
    lines = [f"{m.name}: {m.raw.get('description') or '(no description)'}",
             f"spec {spec} (sha256 {m.spec_digest}), hzgen {m.version}", ""]
    lines.append("Boxes")
    lines += [f"  {k:<12} {v}" for k, v in boxes(m)]
    lines += ["", "Boundaries"]
    lines += [f"  {k:<16} {BOUNDARY_DOC[k]}: {v}" for k, v in boundaries(m)]
    lines += ["", "Class ranges (per class: blocks a tier holds at most / blocks moved in on a "
                  "miss / blocks moved out when full)"]
    for r in m.ranges:
        budgets = [f"{t.kind} max_bytes {size_text(m.raw['tiers'][r.index][t.kind]['max_bytes'])}"
                   for t in r.caches if m.raw["tiers"][r.index][t.kind]["max_bytes"]]
        lines.append(f"  range {r.index}: {r.lo}..{r.hi} B, classes {r.first_class}..{r.last_class}: "
                     + " -> ".join(r.chain)
                     + (f" (budget: {', '.join(budgets)})" if budgets else ""))
        lines += range_table(m, r)
    for name, steps in fast_paths(m).items():
        lines += ["", f"{name} fast path"]
        lines += [f"  {i}. {s}" for i, s in enumerate(steps, 1)]
    lines += ["", "Switched off"]
    lines += [f"  - {s}" for s in switched_off(m)]
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="spec file (YAML)")


@guarded("explain")
def run(args) -> int:
    from .pipeline import load_model
    m = load_model(args.spec)
    print(explain(m, args.spec), end="")
    return 0
