"""Stage 1: spec loading and validation.

load_spec(path) reads a YAML spec (following `extends:`), checks it against the option table and
the rules that tie options together, and returns a Spec: plain nested dicts with every default
filled in, plus where each key came from so errors can say FILE:LINE:COL.
"""
from __future__ import annotations

import errno
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import options as O
from .workload import ProfileError, hot_sizes, load_profile, tuned_sizes
from .yamldoc import DocumentError, read_document


class SpecError(DocumentError):
    """One or more `FILE:LINE:COL: message` problems of a spec."""


@dataclass
class Spec:
    path: Path
    data: dict            # merged, defaults filled in
    where: dict           # key path tuple -> Where
    files: list[Path]     # this file, every file it extends, and the profile its table read

    @property
    def name(self) -> str:
        return self.data["name"]

    def digest(self) -> str:
        """Hash of the resolved spec: the same allocator gives the same hash wherever it lives
        (a workload profile counts by the classes it adds, `profile_sizes`, not by its path)."""
        data = {**self.data, "size_classes": {**self.data["size_classes"], "profile": None}}
        canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- YAML with positions


def _read_yaml(path: Path, shown: str) -> tuple[Any, dict]:
    try:
        return read_document(path, shown, "spec")
    except DocumentError as e:
        raise SpecError(e.problems)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, RuntimeError, OSError):   # RuntimeError: a symbolic link loop (3.11)
        return str(path)


def _link_trouble(path: Path) -> str | None:
    """why a path that is a symbolic link leads nowhere ("a symbolic link loop", "a dangling
    symbolic link"), or None"""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:
        return "a symbolic link loop"
    except OSError as e:
        return "a symbolic link loop" if e.errno == errno.ELOOP else "a dangling symbolic link"
    return None


def _load_raw(path: Path, chain: tuple) -> tuple[dict, dict, list[Path]]:
    trouble = _link_trouble(path)
    if trouble:                     # named as given: resolved, it is the link's target
        raise SpecError([f"{path}:1:1: cannot read: {trouble}"])
    shown = _shown(path)
    real = path.resolve()
    if real in chain:
        raise SpecError([f"{shown}:1:1: `extends` loop: "
                         + " -> ".join(_shown(p) for p in chain + (real,))])
    data, where = _read_yaml(path, shown)
    files = [real]
    ext = data.get("extends")
    if ext is None:
        return data, where, files
    if not isinstance(ext, str) or not ext:
        raise SpecError([f"{where[('extends',)]}: extends: expected a path to a spec"])
    base_path = path.parent / ext
    try:
        found, there = base_path.is_file(), base_path.exists()
    except OSError as e:             # a directory on the way that cannot be searched
        raise SpecError([f"{where[('extends',)]}: extends: cannot read '{ext}': {e.strerror}"])
    if not found:
        what = _link_trouble(base_path) or ("not a regular file" if there else "no such spec file")
        raise SpecError([f"{where[('extends',)]}: extends: {what} '{ext}'"])
    base, base_where, base_files = _load_raw(base_path, chain + (real,))
    base.pop("name", None)          # a name is never inherited
    base.pop("description", None)
    merged = _merge(base, {k: v for k, v in data.items() if k != "extends"})
    if "tiers" in data:       # a list is replaced whole: the base's positions for it are void
        base_where = {k: w for k, w in base_where.items() if not k or k[0] != "tiers"}
    return merged, {**base_where, **where}, base_files + files



# ---------------------------------------------------------------- values

# ASCII digits only (`\d` takes any script's), and few enough for int() and a C constant
_SIZE_RE = re.compile(r"\A\s*([0-9]{1,20})\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*\Z", re.I)
_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
IDENT_RE = re.compile(r"\A[a-z][a-z0-9_]{0,31}\Z")   # \Z: `$` would let a final newline through


DESCRIPTION_MAX = 200


def description_line(text: str) -> str:
    """text as a valid `description` (one printable line of at most DESCRIPTION_MAX characters),
    for the specs hzgen writes itself around a path it was given"""
    line = "".join(ch if ch.isprintable() else "?" for ch in text)
    return line if len(line) <= DESCRIPTION_MAX else line[:DESCRIPTION_MAX - 3] + "..."


def _brief(v: Any, limit: int = 60) -> str:
    """repr(v) for a message, cut short: a 4000-digit number is not repeated whole"""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 5] + "...(" + str(len(r)) + " chars)"


def parse_size(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        m = _SIZE_RE.match(v)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2).lower() if m.group(2) else None]
    return None


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def fmt_size(n: int) -> str:
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1024)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


class _Checker:
    def __init__(self, where: dict, fallback: str):
        self.where = where
        self.fallback = fallback
        self.problems: list[str] = []
        self.profile_file: Path | None = None   # the profile a `scheme: profile` table read

    def at(self, keypath: tuple) -> str:
        kp = tuple(keypath)
        while kp and kp not in self.where:
            kp = kp[:-1]
        w = self.where.get(kp)
        return str(w) if w else f"{self.fallback}:1:1"

    def error(self, keypath: tuple, msg: str) -> None:
        self.problems.append(f"{self.at(keypath)}: {msg}")

    def key_error(self, keypath: tuple, msg: str) -> None:
        """An error about a key itself (unknown, misplaced): point at the key, not its value."""
        w = self.where.get(("key",) + tuple(keypath))
        self.problems.append(f"{w or self.at(keypath)}: {msg}")

    def value(self, opt: O.Option, v: Any, keypath: tuple, label: str) -> Any:
        """Check and normalize one scalar value; returns None after reporting a problem."""
        if v is None:
            if opt.nullable:
                return None
            self.error(keypath, f"{label}: a value is required")
            return None
        k = opt.kind
        if k in (O.INT, O.SIZE):
            n = parse_size(v) if k == O.SIZE else (v if isinstance(v, int) and not isinstance(v, bool) else None)
            if n is None:
                what = "a size (bytes, or like 64KiB)" if k == O.SIZE else "an integer"
                self.error(keypath, f"{label}: expected {what}, got {_brief(v)}")
                return None
            if (opt.lo is not None and n < opt.lo) or (opt.hi is not None and n > opt.hi):
                self.error(keypath, f"{label}: {_brief(n)} is out of range "
                                    f"[{fmt_size(int(opt.lo))}, {fmt_size(int(opt.hi))}]")
                return None
            if opt.pow2 and not _is_pow2(n):
                self.error(keypath, f"{label}: {_brief(n)} must be a power of two")
                return None
            return n
        if k == O.FLOAT:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.error(keypath, f"{label}: expected a number, got {_brief(v)}")
                return None
            if not (opt.lo <= v <= opt.hi):
                self.error(keypath, f"{label}: {_brief(v)} is out of range [{opt.lo}, {opt.hi}]")
                return None
            return float(v)
        if k == O.BOOL:
            if not isinstance(v, bool):
                self.error(keypath, f"{label}: expected true or false, got {_brief(v)}")
                return None
            return v
        if k == O.CHOICE:
            if isinstance(v, bool) and "off" in opt.choices:
                v = "off" if v is False else v   # YAML 1.1 reads `off` as false
            if v not in opt.choices:
                self.error(keypath, f"{label}: expected one of {', '.join(opt.choices)}, got {_brief(v)}")
                return None
            return v
        if k == O.IDENT:
            if not isinstance(v, str) or not IDENT_RE.match(v):
                self.error(keypath, f"{label}: {v!r} is not a valid name (lower-case C "
                                    "identifier: letters, digits, _; at most 32 characters)")
                return None
            return v
        if k == O.STR:
            if not isinstance(v, str):
                self.error(keypath, f"{label}: expected a string, got {_brief(v)}")
                return None
            if keypath == ("description",) and (len(v) > DESCRIPTION_MAX or not v.isprintable()):
                # explain and diff print it: no escape sequences for the terminal, no new lines
                self.error(keypath, f"{label}: one line of printable text, at most 200 "
                                    f"characters, got {_brief(v)}")
                return None
            return v
        raise AssertionError(k)

    def section(self, table: list[O.Option], section: str, given: Any, keypath: tuple,
                label: str | None = None) -> dict:
        """Validate the keys of one mapping against the table; returns it with defaults.
        `label` is how messages name the mapping (default: the section's dotted path)."""
        kids = O.children(table, section)
        label = label or section or "spec"
        if not isinstance(given, dict):
            self.error(keypath, f"{label}: expected a mapping, got {_brief(given)}")
            given = {}
        out = {}
        for key, v in given.items():
            if key not in kids:
                self.key_error(keypath + (key,), f"unknown key '{key}' in {label} "
                                             f"(known: {', '.join(sorted(kids))})")
        for key, opt in kids.items():
            full = f"{label}.{key}" if section or label != "spec" else key
            kp = keypath + (key,)
            if opt.kind == O.SECTION:
                continue  # sections are handled by their owners
            if key in given:
                out[key] = (given[key] if opt.kind in O.LIST_KINDS
                            else self.value(opt, given[key], kp, full))
            elif opt.default is not None or opt.nullable:
                out[key] = opt.default
            elif opt.kind not in O.LIST_KINDS:
                self.error(keypath, f"{label}: missing required key '{key}'")
        return out


# ---------------------------------------------------------------- the spec rules

def _validate(raw: dict, where: dict, shown: str) -> tuple[dict, Path | None]:
    c = _Checker(where, shown)
    spec = c.section(O.OPTIONS, "", raw, ())
    raw_stats = raw.get("stats", {})
    if not isinstance(raw_stats, dict):   # `stats: off` shorthand
        raw_stats = {"level": raw_stats}
    for sec in ("size_classes", "superslab", "remote_free", "large", "backing", "checks"):
        spec[sec] = c.section(O.OPTIONS, sec, raw.get(sec, {}), (sec,))
    spec["stats"] = c.section(O.OPTIONS, "stats", raw_stats, ("stats",))

    sc = spec["size_classes"]
    sizes = _class_sizes(c, sc, raw.get("size_classes", {}))
    spec["size_classes"]["sizes"] = sizes
    spec["tiers"] = _tiers(c, raw.get("tiers"), sizes, sc.get("small_max"))

    rf = spec["remote_free"].get("strategy")
    if spec.get("threads") is True and rf == "none":
        c.error(("remote_free", "strategy"), "remote_free.strategy: none is only for "
                "single-threaded allocators; set `threads: false` or pick page_mpsc/owner_stash")
    if spec.get("threads") is False and rf not in (None, "none"):
        c.error(("threads",), "threads: false needs remote_free.strategy: none")
    bk = spec["backing"]
    if bk.get("purge_thread") and (bk.get("release") != "delayed" or spec.get("threads") is False):
        c.error(("backing", "purge_thread"), "backing.purge_thread needs backing.release: "
                "delayed and threads: true (it returns memory that waits out delay_ms)")
    st = spec["stats"]
    if st.get("level") == "off" and st.get("report") == "always":
        c.error(("stats", "report"), "stats.report: always needs stats.level counters or "
                "per_class (there is nothing to print with stats off)")
    ss = spec["superslab"]
    seg, slab, small_max = ss.get("segment"), ss.get("slab"), sc.get("small_max")
    if seg and slab:
        if seg < 8 * slab:
            c.error(("superslab", "slab"), f"superslab.slab: a segment of {fmt_size(seg)} needs "
                    f"slabs of at most {fmt_size(seg // 8)} (8 or more per segment)")
        elif seg // slab > 1024:
            c.error(("superslab", "slab"), f"superslab.slab: {fmt_size(seg)}/{fmt_size(slab)} "
                    "gives more than 1024 slabs per segment")
        units = ss.get("max_units") or 1
        if small_max and small_max > slab * units:
            c.error(("size_classes", "small_max"), f"size_classes.small_max: {_brief(small_max)} does not "
                    f"fit in a slab of {units} x {fmt_size(slab)} (raise superslab.max_units)")
    if c.problems:
        raise SpecError(c.problems)
    return spec, c.profile_file


def _class_sizes(c: _Checker, sc: dict, raw_sc: Any) -> list[int]:
    q, small_max = sc.get("quantum"), sc.get("small_max")
    if not q or not small_max:
        return []
    if small_max % q:
        c.error(("size_classes", "small_max"), f"size_classes.small_max: {_brief(small_max)} is not a "
                f"multiple of the quantum {q}")
        return []
    scheme = sc.get("scheme")
    given = raw_sc.get("sizes") if isinstance(raw_sc, dict) else None
    extra = raw_sc.get("extra") if isinstance(raw_sc, dict) else None
    if isinstance(raw_sc, dict) and raw_sc.get("profile") is not None and sc.get("profile") is None:
        return []                        # given, but not a path: reported already
    if (scheme == "profile") != (sc.get("profile") is not None):
        c.error(("size_classes", "profile" if sc.get("profile") is not None else "scheme"),
                "size_classes: scheme profile and `profile: FILE` go together (`profile: null` "
                "if a base sets it)")
        return []
    if scheme == "explicit":
        if given is None:
            c.error(("size_classes", "scheme"), "size_classes: scheme explicit needs `sizes`")
            return []
        if extra is not None:
            c.error(("size_classes", "extra"), "size_classes.extra: only used with scheme "
                    "geometric (list every size in `sizes`; `extra: null` if a base sets it)")
        sizes = [n for n, _ in _explicit_sizes(c, given)]
    else:
        if given is not None:
            c.error(("size_classes", "sizes"), "size_classes.sizes: only used with scheme explicit "
                    "(`sizes: null` if a base sets it)")
        lo, lin, steps = sc.get("min"), sc.get("linear_until"), sc.get("steps_per_doubling")
        if not (lo and lin and steps):
            return []
        if lo % q or lin % q:
            c.error(("size_classes",), f"size_classes: min and linear_until must be multiples "
                    f"of the quantum {q}")
            return []
        if lo > small_max or lin < lo:
            c.error(("size_classes", "min"), f"size_classes: min ({lo}) must be at most "
                    f"linear_until ({lin}) and small_max ({small_max}): it is the first class")
            return []
        sizes = geometric_sizes(q, lo, lin, steps, small_max)
        if extra is not None:
            added = _explicit_sizes(c, extra, "extra")
            for n, i in added:
                if n % q or n > small_max:
                    c.error(("size_classes", "extra", i), f"size_classes.extra: {n} must be a "
                            f"multiple of the quantum {q} and at most small_max ({small_max})")
                    return []
            # kept normalized (what the steps do not give, sorted), so equal tables digest alike
            sc["extra"] = sorted({n for n, _ in added} - set(sizes)) or None
            sizes = sorted(set(sizes) | {n for n, _ in added})
        if scheme == "profile":
            sizes = _profile_sizes(c, sc, sizes)
    if not sizes:
        return []
    for i, s in enumerate(sizes):
        kp = ("size_classes", "sizes")
        if s % q:
            c.error(kp, f"size_classes.sizes: {s} is not a multiple of the quantum {q}")
            return []
        if i and s <= sizes[i - 1]:
            c.error(kp, f"size_classes.sizes: sizes must increase ({sizes[i - 1]} then {s})")
            return []
    if sizes[-1] != small_max:
        c.error(("size_classes", "small_max"), f"size_classes: the largest class ({sizes[-1]}) "
                f"must equal small_max ({small_max}) so every small size has exactly one class")
        return []
    if len(sizes) > 255:
        c.error(("size_classes",), f"size_classes: {len(sizes)} classes; at most 255")
        return []
    return sizes


def _profile_sizes(c: _Checker, sc: dict, base: list[int]) -> list[int]:
    """The geometric `base` plus the profile's hot sizes (hzgen.workload: the rule `hzgen
    preload` uses). The profile is read relative to the file that names it; its resolved path
    is kept for Spec.files, the sizes it added in `sc["profile_sizes"]`."""
    kp = ("size_classes", "profile")
    w = c.where.get(kp)
    # the file that set it as it was opened (like `extends:`), never the name shown, which
    # depends on the working directory
    path = w.source.parent / sc["profile"] if w and w.source else Path(sc["profile"])
    try:
        doc = load_profile(path, _shown(path))
    except ProfileError as e:
        c.error(kp, f"size_classes.profile: {e}")
        return []
    if not base:
        return []                        # the geometric table's own error says why
    sizes, added, _ = tuned_sizes(base, hot_sizes(doc["classes"]), sc["quantum"], sc["small_max"])
    c.profile_file = path.resolve()
    sc["profile_sizes"] = added
    return sizes


def _explicit_sizes(c: _Checker, given: Any, key: str = "sizes") -> list[tuple[int, int]]:
    """The sizes of a `sizes`/`extra` list, each with the index of the item (a size or a run)
    it came from, for error positions."""
    kp = ("size_classes", key)
    if not isinstance(given, list) or not given:
        c.error(kp, f"size_classes.{key}: expected a non-empty list")
        return []
    out: list[tuple[int, int]] = []
    for i, item in enumerate(given):
        if isinstance(item, dict):
            if set(item) != {"from", "to", "step"}:
                c.error(kp + (i,), f"size_classes.{key}: a run is {{from: A, to: B, step: S}}")
                return []
            a, b, s = (parse_size(item[k]) for k in ("from", "to", "step"))
            if None in (a, b, s) or a <= 0 or s <= 0 or a > b or (b - a) // s > 4096:
                c.error(kp + (i,), f"size_classes.{key}: bad run {_brief(item)} (sizes from 1 "
                        "up, step at least 1, from <= to, at most 4097 sizes)")
                return []
            out.extend((n, i) for n in range(a, b + 1, s))
        else:
            n = parse_size(item)
            if n is None or n <= 0:
                c.error(kp + (i,), f"size_classes.{key}: expected a size, got {_brief(item)}")
                return []
            out.append((n, i))
    return out


def explicit_table(sizes: list[int], small_max: int) -> dict:
    """`size_classes` of an explicit table that replaces whatever table a base spec has (the
    keys of the other schemes set to null, so merging it over any base validates)."""
    return {"scheme": "explicit", "sizes": sizes, "small_max": small_max, "extra": None,
            "profile": None}


def geometric_sizes(q: int, lo: int, linear_until: int, steps: int, small_max: int) -> list[int]:
    sizes = list(range(lo, min(linear_until, small_max) + 1, q))
    s = sizes[-1] if sizes else lo
    while s < small_max:
        p = 1 << (s.bit_length() - 1)          # the power of two at or below s
        step = max(q, (p // steps + q - 1) // q * q)
        s = min(small_max, s + step)
        sizes.append(s)
    return sizes


def _tiers(c: _Checker, raw: Any, sizes: list[int], small_max: int | None) -> list[dict]:
    if raw is None:
        c.error(("tiers",), "spec: missing required key 'tiers'")
        return []
    if not isinstance(raw, list) or not raw:
        c.error(("tiers",), "tiers: expected a non-empty list of class ranges")
        return []
    out = []
    for i, entry in enumerate(raw):
        kp = ("tiers", i)
        label = f"tiers[{i}]"
        t = c.section(O.TIER_OPTIONS, "", entry, kp, label=label)
        rng = t.get("range")
        if not (isinstance(rng, list) and len(rng) == 2 and all(parse_size(x) for x in rng)):
            c.error(kp + ("range",), f"{label}.range: expected [lo, hi] sizes, got {_brief(rng)}")
            continue
        lo, hi = (parse_size(x) for x in rng)
        chain = t.get("chain")
        if not (isinstance(chain, list) and all(isinstance(x, str) for x in chain)):
            c.error(kp + ("chain",), f"{label}.chain: expected a list like [ring, sll, superslab]")
            continue
        bad = [x for x in chain if x not in O.TIER_KINDS]
        if bad:
            c.error(kp + ("chain",), f"{label}.chain: unknown tier '{bad[0]}' "
                    f"(known: {', '.join(O.TIER_KINDS)})")
            continue
        if not chain or chain[-1] != "superslab" or chain.count("superslab") != 1:
            c.error(kp + ("chain",), f"{label}.chain: must end with superslab (and name it once)")
            continue
        caches = chain[:-1]
        if not caches or len(set(caches)) != len(caches):
            c.error(kp + ("chain",), f"{label}.chain: needs at least one cache tier (ring, sll) "
                    "in front of superslab, each at most once")
            continue
        tier = {"range": [lo, hi], "chain": chain}
        given = entry if isinstance(entry, dict) else {}
        for kind in O.CACHE_TIERS:
            if kind in given and kind not in caches:
                c.key_error(kp + (kind,), f"{label}.{kind}: settings given but {kind} is not in "
                            "the chain")
            if kind in caches:
                params = c.section(O.TIER_OPTIONS, kind, given.get(kind, {}), kp + (kind,),
                                   label=f"{label}.{kind}")
                if kind == "sll" and params.get("slow_start") and caches[-1] != "sll":
                    c.error(kp + (kind, "slow_start"), f"{label}.sll.slow_start: only for an sll "
                            "that refills from the slabs (the last cache tier of the chain)")
                cap = params.get("capacity")
                for b in ("refill_batch", "drain_batch"):
                    if cap and params.get(b) and params[b] > cap:
                        c.error(kp + (kind, b), f"{label}.{kind}.{b}: {params[b]} exceeds the "
                                f"capacity {cap}")
                tier[kind] = params
        out.append(tier)
    if c.problems or not sizes:
        return out
    expect_lo = sizes[0]
    for i, t in enumerate(out):
        lo, hi = t["range"]
        kp = ("tiers", i, "range")
        if lo != expect_lo:
            what = "leaves a gap" if lo > expect_lo else "overlaps the previous range"
            c.error(kp, f"tiers[{i}].range: starts at {lo} but must start at {expect_lo} "
                    f"(it {what}; ranges must cover {sizes[0]}..{small_max} exactly)"
                    if i else f"tiers[0].range: must start at the smallest class, {sizes[0]}")
            return out
        if hi > small_max:
            c.error(kp, f"tiers[{i}].range: ends at {_brief(hi)}, past small_max ({small_max}); "
                    "larger blocks go to the large box")
            return out
        if hi not in sizes:
            below = max([s for s in sizes if s < hi], default=None)
            above = min([s for s in sizes if s > hi], default=None)
            near = " or ".join(str(x) for x in (below, above) if x is not None)
            c.error(kp, f"tiers[{i}].range: ends at {hi}, inside a size class; end it at a class "
                    f"size ({near})")
            return out
        expect_lo = hi + 1
    if expect_lo != small_max + 1:
        c.error(("tiers",), f"tiers: ranges end at {expect_lo - 1} but must reach small_max "
                f"({small_max})")
    return out


def load_spec(path: str | Path) -> Spec:
    """Read, merge and validate a spec. Raises SpecError with FILE:LINE:COL messages."""
    path = Path(path)
    raw, where, files = _load_raw(path, ())
    data, profile = _validate(raw, where, _shown(path))
    return Spec(path=path, data=data, where=where, files=files + ([profile] if profile else []))
