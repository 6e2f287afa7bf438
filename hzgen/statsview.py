"""`hzgen stats [FILE]`: an HZ_STATS exit report as a table, and with --plot as a PNG chart.

Input (FILE, or stdin when FILE is `-` or absent) is what the stats box prints
(templates/box_stats.c.j2), either format:
  text (HZ_STATS=1):   `hz-stats allocator=NAME level=LEVEL`, a column header line
                       (`class size alloc free ...`), one row per class that saw traffic
                       (`all -` for level counters), then `memory key=value ...`;
  JSON (HZ_STATS=json): `{"hz_stats": 1, "allocator": ..., "level": ..., "classes": [...],
                       "memory": {...}}`.
Anything around a report is ignored (a program's own stderr). Every process that exits prints
its own report, so a stream may hold several: reports of the same allocator and level are
summed (said on stderr), and mixing allocators is an error. A report with no header, a bad row
or no `memory` line is malformed: a message naming the line, exit 2.

Columns (per class, then the total):
  alloc, free, miss         the counters as reported; miss: tier 0 was empty (hz_alloc_miss)
  t0 hit%                   (alloc - miss) / alloc: allocations served by the first tier
  refill cache, refill slab refills of a tier from the cache tier below it / of the last cache
                            tier from the superslab
  from cache%               refill cache / (refill cache + refill slab)
  drain cache, drain slab   drains of a full tier into the tier below / into the superslab
  remote out, remote in     blocks freed into another heap / received from other heaps
then the memory line: segments and large mappings mapped and released, bytes mapped (peak and
at exit) and bytes returned to the OS by purging.

--plot FILE.png draws: tier-0 hit rate per class, refills per class (cache vs slab), drains and
remote frees per class, and the memory counters.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .tool import ToolError, brief, check_output_file, guarded, publish, read_regular, size_text, table

FIELDS = ("alloc", "free", "miss", "refill_cache", "refill_slab", "drain_cache", "drain_slab",
          "remote_out", "remote_in")
MEMORY = ("segments_mapped", "segments_released", "large_mapped", "large_released",
          "bytes_mapped_peak", "bytes_mapped_now", "bytes_purged")
LEVELS = ("counters", "per_class")       # what the stats box reports (stats.level but off)
MAX_DIGITS = 30                          # a uint64_t counter has at most 20
MAX_INPUT = 16 << 20                     # a report is a few KiB; a stream of them, more
_HEADER = re.compile(r"hz-stats allocator=(\S+) level=(\S+)\s*$")
_JSON = re.compile(r'\{\s*"hz_stats"\s*:')
_COUNT = re.compile(r"[0-9]{1,%d}" % MAX_DIGITS)      # ASCII digits only (not `²`, not `٣`)


@dataclass
class Report:
    allocator: str
    level: str
    rows: dict = field(default_factory=dict)     # class (int, or "all") -> {"size", *FIELDS}
    memory: dict = field(default_factory=dict)
    count: int = 1                               # reports summed into this one


def _count(v, where: str) -> int:
    """a counter of the report: a whole number (in JSON, or ASCII digits in the text form) that
    fits the report's uint64_t"""
    if isinstance(v, str):
        if not _COUNT.fullmatch(v):
            raise ToolError(f"{where}: expected a count, got {brief(v)}")
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ToolError(f"{where}: expected a count, got {brief(v)}")
    if v < 0:
        raise ToolError(f"{where}: negative count {v}")
    if v >= 1 << 64:
        raise ToolError(f"{where}: count {str(v)[:20]}... is beyond a 64-bit counter")
    return v


class _TooManyDigits(ValueError):
    pass


class _DuplicateKey(ValueError):
    pass


def _json_object(pairs: list) -> dict:
    """object_pairs_hook of the JSON decoder: a key given twice is refused (the stats box
    writes each once; json's default keeps the last one silently)"""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _json_int(s: str) -> int:
    """parse_int of the JSON decoder: a number longer than any counter is refused before int()
    (which refuses more than 4300 digits with a ValueError of its own)."""
    if len(s.lstrip("-")) > MAX_DIGITS:
        raise _TooManyDigits(s)
    return int(s)


def _parse_text(lines: list[str], i: int, source: str) -> tuple[Report, int]:
    """The report whose header is lines[i]; returns it and the index after its memory line."""
    m = _HEADER.search(lines[i])
    rep = Report(m.group(1), m.group(2))
    if rep.level not in LEVELS:
        raise ToolError(f"{source}:{i + 1}: unknown stats level {brief(rep.level)} "
                        f"(expected {' or '.join(LEVELS)})")
    if i + 1 >= len(lines):
        raise ToolError(f"{source}:{i + 2}: truncated report (no column header)")
    cols = lines[i + 1].split()
    if cols[:2] != ["class", "size"] or set(FIELDS) - set(cols[2:]):
        raise ToolError(f"{source}:{i + 2}: expected the column header "
                        f"`class size {' '.join(FIELDS)}`, got {lines[i + 1].strip()!r}")
    for j in range(i + 2, len(lines)):
        where = f"{source}:{j + 1}"
        words = lines[j].split()
        if words[:1] == ["memory"]:
            for kv in words[1:]:
                k, eq, v = kv.partition("=")
                if not eq:
                    raise ToolError(f"{where}: malformed memory item {kv!r} (expected key=value)")
                rep.memory[k] = _count(v, f"{where}: {k}")
            missing = [k for k in MEMORY if k not in rep.memory]
            if missing:
                raise ToolError(f"{where}: memory line lacks {', '.join(missing)}")
            if rep.level == "counters" and not rep.rows:
                raise ToolError(f"{where}: malformed report (level counters, but no `all` row)")
            return rep, j + 1
        if len(words) != len(cols):
            raise ToolError(f"{where}: malformed row (expected {len(cols)} columns: "
                            f"{' '.join(cols)}), got {lines[j].strip()[:80]!r}")
        # the writer: level counters has one row, class `all`; per_class a row per class
        if rep.level == "counters":
            if words[0] != "all" or rep.rows:
                raise ToolError(f"{where}: malformed report (level counters has one row, "
                                f"class all), got {lines[j].strip()[:80]!r}")
            cls = "all"
        else:
            cls = _count(words[0], f"{where}: class")
            if cls in rep.rows:
                raise ToolError(f"{where}: malformed report (class {cls} appears twice)")
        row = {"size": None if words[1] == "-" else _count(words[1], f"{where}: size")}
        row.update({c: _count(v, f"{where}: {c}") for c, v in zip(cols[2:], words[2:])})
        rep.rows[cls] = row
    raise ToolError(f"{source}: truncated report (no `memory` line after line {i + 1})")


def _parse_json(obj, where: str) -> Report:
    """A report from its JSON object, checked against what the stats box writes
    (templates/box_stats.c.j2): level counters has exactly one row in classes (class 0,
    size 0), per_class one row per class that saw traffic, each class once."""
    if not isinstance(obj, dict) or type(obj.get("hz_stats")) is not int or obj["hz_stats"] != 1:
        raise ToolError(f"{where}: not an hz_stats version 1 report")

    def bad(what: str):
        return ToolError(f"{where}: malformed report ({what})")

    def number(v, what: str) -> int:   # a JSON number: "92" is the text form's, not JSON's
        if isinstance(v, str):
            raise ToolError(f"{what}: expected a count, got {brief(v)}")
        return _count(v, what)

    for key in ("allocator", "level", "classes", "memory"):
        if key not in obj:
            raise bad(f"missing {key!r}")
    allocator, level, classes, memory = (obj[k] for k in ("allocator", "level", "classes", "memory"))
    if not isinstance(allocator, str) or not allocator or any(c.isspace() for c in allocator):
        raise bad(f"allocator: expected a name, got {brief(allocator)}")
    if not isinstance(level, str) or level not in LEVELS:
        raise bad(f"level: expected {' or '.join(LEVELS)}, got {brief(level)}")
    if not isinstance(classes, list):
        raise bad(f"classes: expected a list, got {brief(classes)}")
    if level == "counters" and len(classes) != 1:
        raise bad(f"level counters has one row in classes, got {len(classes)}")
    rep = Report(allocator, level)
    for i, c in enumerate(classes):
        if not isinstance(c, dict):
            raise bad(f"classes[{i}]: expected an object, got {brief(c)}")
        missing = [k for k in (("class", "size") if level == "per_class" else ()) + FIELDS
                   if k not in c]
        if missing:
            raise bad(f"classes[{i}] lacks {', '.join(missing)}")
        if level == "counters":
            cls, size = "all", None
        else:
            cls = number(c["class"], f"{where}: classes[{i}].class")
            if cls in rep.rows:
                raise bad(f"class {cls} appears twice in classes")
            size = number(c["size"], f"{where}: classes[{i}].size")
        rep.rows[cls] = {"size": size}
        rep.rows[cls].update({f: number(c[f], f"{where}: classes[{i}].{f}") for f in FIELDS})
    if not isinstance(memory, dict):
        raise bad(f"memory: expected an object, got {brief(memory)}")
    missing = [k for k in MEMORY if k not in memory]
    if missing:
        raise bad(f"memory lacks {', '.join(missing)}")
    rep.memory = {k: number(memory[k], f"{where}: memory.{k}") for k in MEMORY}
    return rep


def parse(text: str, source: str = "<stdin>") -> list[Report]:
    """Every report in text, in order."""
    reports: list[Report] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if _HEADER.search(lines[i]):
            rep, i = _parse_text(lines, i, source)
            reports.append(rep)
        else:
            i += 1
    dec = json.JSONDecoder(parse_int=_json_int, object_pairs_hook=_json_object)
    line, counted, end = 1, 0, 0
    for m in _JSON.finditer(text):
        if m.start() < end:         # inside the report just read
            continue
        line += text.count("\n", counted, m.start())     # (counted on from the last one)
        counted = m.start()
        try:
            obj, end = dec.raw_decode(text, m.start())
        except json.JSONDecodeError as e:
            raise ToolError(f"{source}:{line}: malformed JSON report: {e.msg} "
                            f"(line {e.lineno}, column {e.colno})")
        except _TooManyDigits:
            raise ToolError(f"{source}:{line}: malformed JSON report: a number of more than "
                            f"{MAX_DIGITS} digits")
        except _DuplicateKey as e:
            raise ToolError(f"{source}:{line}: malformed JSON report: the key {brief(str(e))} "
                            "appears twice in one object")
        except ValueError:
            raise ToolError(f"{source}:{line}: malformed JSON report: an unreadable value")
        except RecursionError:
            raise ToolError(f"{source}:{line}: malformed JSON report: nested too deeply")
        reports.append(_parse_json(obj, f"{source}:{line}"))
    if not reports:
        raise ToolError(f"{source}: no hz-stats report found (expected the output of "
                        "HZ_STATS=1 or HZ_STATS=json)")
    return reports


def merge(reports: list[Report]) -> Report:
    kinds = {(r.allocator, r.level) for r in reports}
    if len(kinds) > 1:
        raise ToolError("reports of different allocators or levels: "
                        + ", ".join(f"{a} ({lv})" for a, lv in sorted(kinds)))
    out = Report(reports[0].allocator, reports[0].level, count=len(reports))
    for r in reports:
        for cls, row in r.rows.items():
            acc = out.rows.setdefault(cls, {"size": row["size"], **dict.fromkeys(FIELDS, 0)})
            for f in FIELDS:
                acc[f] += row[f]
        for k, v in r.memory.items():
            out.memory[k] = out.memory.get(k, 0) + v
    out.rows = dict(sorted(out.rows.items(), key=lambda kv: -1 if kv[0] == "all" else kv[0]))
    return out


# ---------------------------------------------------------------- output

def pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:.1f}" if den else "-"


def derived(row: dict) -> dict:
    return {"t0_hit_pct": pct(row["alloc"] - row["miss"], row["alloc"]),
            "refill_from_cache_pct": pct(row["refill_cache"],
                                         row["refill_cache"] + row["refill_slab"])}


def human(n: int) -> str:
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"


def render_table(rep: Report) -> str:
    header = ["class", "size", "alloc", "free", "t0 hit%", "miss", "refill cache", "refill slab",
              "from cache%", "drain cache", "drain slab", "remote out", "remote in"]
    rows, total = [], dict.fromkeys(FIELDS, 0)

    def line(cls, size, r):
        d = derived(r)
        return [cls, size, r["alloc"], r["free"], d["t0_hit_pct"], r["miss"], r["refill_cache"],
                r["refill_slab"], d["refill_from_cache_pct"], r["drain_cache"], r["drain_slab"],
                r["remote_out"], r["remote_in"]]

    for cls, r in rep.rows.items():
        if not any(r[f] for f in FIELDS):
            continue
        for f in FIELDS:
            total[f] += r[f]
        rows.append(line(cls, "-" if r["size"] is None else r["size"], r))
    if len(rows) > 1:
        rows.append(line("total", "", total))
    mem = rep.memory
    out = [f"hz-stats: allocator {rep.allocator}, level {rep.level}"
           + (f", {rep.count} reports summed" if rep.count > 1 else "")]
    out += table(header, rows) if rows else ["(no allocations counted)"]
    out.append(f"memory: segments mapped {mem['segments_mapped']}, released "
               f"{mem['segments_released']}; large blocks {mem['large_mapped']}, released "
               f"{mem['large_released']}; mapped at exit {human(mem['bytes_mapped_now'])}, peak "
               f"{human(mem['bytes_mapped_peak'])}"
               + (" (sum of the processes' peaks)" if rep.count > 1 else "")
               + f"; returned to the OS (purged) {human(mem['bytes_purged'])}")
    return "\n".join(out) + "\n"


def plot(rep: Report, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ToolError("--plot needs matplotlib (pip install matplotlib)")
    rows = [(cls, r) for cls, r in rep.rows.items() if any(r[f] for f in FIELDS)]
    labels = [str(r["size"]) if r["size"] is not None else "all" for _, r in rows]
    x = list(range(len(rows)))
    fig, ax = plt.subplots(2, 2, figsize=(max(10, len(rows) * 0.35 + 4), 8))
    hit = [100.0 * (r["alloc"] - r["miss"]) / r["alloc"] if r["alloc"] else 0 for _, r in rows]
    ax[0][0].bar(x, hit, color="tab:green")
    ax[0][0].set_ylim(0, 100)
    ax[0][0].set_title("tier 0 hit rate (alloc - miss) / alloc, %")

    def stacked(a, fields, title):
        bottom = [0] * len(rows)
        for f in fields:
            vals = [r[f] for _, r in rows]
            a.bar(x, vals, bottom=bottom, label=f)
            bottom = [b + v for b, v in zip(bottom, vals)]
        a.set_title(title)
        a.legend(fontsize=8)
    stacked(ax[0][1], ("refill_cache", "refill_slab"), "refills: from the cache tier below / the slab")
    stacked(ax[1][0], ("drain_cache", "drain_slab", "remote_out", "remote_in"),
            "drains and remote frees")
    for a in (ax[0][0], ax[0][1], ax[1][0]):
        a.set_xticks(x)
        a.set_xticklabels(labels, rotation=90, fontsize=7)
        a.set_xlabel("class size (bytes)")
    mem = rep.memory
    names = ["mapped peak", "mapped at exit", "purged"]
    ax[1][1].bar(names, [mem["bytes_mapped_peak"] / 2**20, mem["bytes_mapped_now"] / 2**20,
                         mem["bytes_purged"] / 2**20], color="tab:blue")
    ax[1][1].set_title(f"memory, MiB (segments {mem['segments_mapped']} mapped / "
                       f"{mem['segments_released']} released; large {mem['large_mapped']} / "
                       f"{mem['large_released']})", fontsize=9)
    fig.suptitle(f"hz-stats: {rep.allocator} ({rep.level})")
    fig.tight_layout()
    # (the directory was checked by check_output_file: it is not made here)
    try:
        publish(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    except OSError as e:
        raise ToolError(f"--plot {path}: cannot write: {e.strerror or 'error'}")
    finally:
        plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default="-", metavar="FILE",
                   help="the report (HZ_STATS_FILE, or captured stderr); - or absent: stdin")
    p.add_argument("--plot", metavar="PNG", help="also draw the report as a PNG chart")


@guarded("stats")
def run(args) -> int:
    if sys.stdout is None:
        raise ToolError("standard output is closed")
    plot_path = None
    if args.plot is not None:       # said wrong before the input is read
        plot_path = check_output_file("--plot", args.plot)
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            raise ToolError("--plot needs matplotlib (pip install matplotlib)")
    if args.file == "-":
        if sys.stdin is None:
            raise ToolError("no FILE, and standard input is closed")
        stdin = getattr(sys.stdin, "buffer", None)
        try:
            data = stdin.read(MAX_INPUT + 1) if stdin is not None else sys.stdin.read(MAX_INPUT + 1)
        except OSError as e:
            raise ToolError(f"<stdin>: cannot read: {e.strerror or 'error'}")
        if len(data) > MAX_INPUT:
            raise ToolError(f"<stdin>: too large (more than {size_text(MAX_INPUT)})")
        source = "<stdin>"
    else:
        data, source = read_regular(args.file, MAX_INPUT), args.file
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    reports = parse(text, source)
    rep = merge(reports)
    if rep.count > 1:
        print(f"hzgen stats: {rep.count} reports (one per process) summed", file=sys.stderr)
    sys.stdout.write(render_table(rep))
    if plot_path is not None:
        plot(rep, plot_path)
        print(f"hzgen stats: wrote {args.plot}", file=sys.stderr)
    return 0
