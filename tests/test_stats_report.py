"""The stats box: one report at exit with HZ_STATS=1 (text) or json; nothing when compiled out."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from conftest import REPO, compile_c, preload_env
from hzgen.statsview import FIELDS, MEMORY, parse
from hzgen.tool import ToolError


@pytest.fixture(scope="session")
def stress_exe(tmp_path_factory):
    return compile_c(REPO / "tests" / "c" / "stress.c", tmp_path_factory.mktemp("st") / "stress")


def run_stress(built, model, exe, mode):
    threads = "8" if model.threads else "0"   # 0: in main (threads: false refuses threads)
    r = subprocess.run([str(exe), threads, "2", "5000"], capture_output=True, text=True, timeout=120,
                       env=preload_env(built, HZ_STATS=mode))
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stderr


def test_json_report(built, model, stress_exe):
    err = run_stress(built, model, stress_exe, "json")
    if not model.stats_on:
        assert "hz_stats" not in err and "hz-stats" not in err
        return
    start = err.index('{"hz_stats"')
    report = json.loads(err[start:])
    assert report["allocator"] == model.name and report["level"] == model.stats["level"]
    rows = report["classes"]
    if model.stats["level"] == "per_class":       # the classes that saw something
        assert 1 <= len(rows) <= len(model.classes)
        assert all(any(r[k] for k in r if k not in ("class", "size")) for r in rows)
        assert len({r["class"] for r in rows}) == len(rows)
    else:
        assert len(rows) == 1
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("class", "size")}
    assert total["alloc"] > 1000 and total["free"] > 1000
    assert total["miss"] > 0 and total["refill_slab"] > 0
    if model.threads:       # 8 threads x 2 rounds overflow their caches; one thread may not
        assert total["drain_slab"] > 0
    if model.threads:
        assert total["remote_out"] > 0 and total["remote_in"] > 0   # stress frees across threads
    mem = report["memory"]
    assert mem["segments_mapped"] >= 1 and mem["large_mapped"] >= 1
    assert mem["bytes_mapped_peak"] >= mem["bytes_mapped_now"] > 0


def test_text_report_once(built, model, stress_exe):
    err = run_stress(built, model, stress_exe, "1")
    if not model.stats_on:
        assert "hz-stats" not in err
        return
    assert err.count("hz-stats allocator=") == 1
    assert "memory segments_mapped=" in err and "bytes_mapped_peak=" in err


def test_no_report_without_env(built, model, stress_exe):
    err = run_stress(built, model, stress_exe, "0")
    assert "hz-stats" not in err and "hz_stats" not in err


# ---------------------------------------------------------------- hzgen stats: bad input
# (reports written here by hand in the box's formats: exit 2 and one line, never a traceback)


def _hzgen_stats(*args, stdin=None, timeout=60):
    """`hzgen stats ARGS` in a child, its address space limited to 1 GiB (what reads without
    bound fails soon)."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "hzgen.cli", "stats", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, input=stdin, timeout=timeout,
                          preexec_fn=preexec)


def _text_report(level="per_class", rows=(("0", "16", "10"),)) -> str:
    """A report as HZ_STATS=1 prints it: rows of (class, size, alloc), the other counters 1."""
    out = [f"hz-stats allocator=x level={level}", "class    size " + " ".join(FIELDS)]
    out += [f"{c:>5} {s:>7} {a:>12}" + " 1" * (len(FIELDS) - 1) for c, s, a in rows]
    out.append("memory " + " ".join(f"{k}=1" for k in MEMORY))
    return "\n".join(out) + "\n"


def _json_report(level="counters", rows=None, **top) -> dict:
    rows = [{"class": 0, "size": 0, **dict.fromkeys(FIELDS, 1)}] if rows is None else rows
    return {"hz_stats": 1, "allocator": "x", "level": level, "classes": rows,
            "memory": dict.fromkeys(MEMORY, 1), **top}


def _refused(text: str, message: str) -> None:
    with pytest.raises(ToolError) as e:
        parse(text, "r.txt")
    assert str(e.value).startswith("r.txt") and message in str(e.value), str(e.value)


def test_stats_counters_are_ascii_digits_of_bounded_length(tmp_path):
    assert parse(_text_report())[0].rows[0]["alloc"] == 10
    # `²` passes str.isdigit() but not int(); 5000 digits are beyond int()'s limit (4300)
    _refused(_text_report(rows=(("0", "16", "²"),)), "expected a count, got '²'")
    _refused(_text_report(rows=(("0", "16", "٣"),)), "expected a count")
    _refused(_text_report(rows=(("0", "16", "9" * 5000),)), "expected a count")
    _refused(_text_report(rows=(("0", "16", "9" * 31),)), "expected a count")
    _refused(_text_report(rows=(("0", "16", "9" * 30),)), "beyond a 64-bit counter")
    big = json.dumps(_json_report()).replace('"alloc": 1', '"alloc": ' + "9" * 5000)
    _refused(big, "a number of more than 30 digits")
    for text in (_text_report(rows=(("0", "16", "9" * 5000),)), big):
        p = tmp_path / "r.txt"
        p.write_text(text)
        r = _hzgen_stats(str(p))
        assert r.returncode == 2 and r.stderr.startswith(f"hzgen stats: {p}:"), r.stderr
        assert "Traceback" not in r.stderr and "ValueError" not in r.stderr
        assert len(r.stderr.splitlines()) == 1 and len(r.stderr) < 300


def test_stats_json_counters_are_numbers_each_given_once():
    """In JSON a counter is a number ("92" is refused, as true is) and a key appears once in an
    object (before: both were taken, the last of two keys silently)."""
    assert parse(json.dumps(_json_report()))[0].rows["all"]["alloc"] == 1
    _refused(json.dumps(_json_report()).replace('"alloc": 1', '"alloc": "92"'),
             "classes[0].alloc: expected a count, got '92'")
    _refused(json.dumps(_json_report()).replace('"alloc": 1', '"alloc": 92, "alloc": 93'),
             "malformed JSON report: the key 'alloc' appears twice in one object")


def test_stats_reads_only_regular_files_of_bounded_size(tmp_path):
    for path, kind in (("/dev/zero", "a device"), (str(tmp_path), "a directory")):
        r = _hzgen_stats(path)
        assert r.returncode == 2 and r.stderr == f"hzgen stats: {path}: cannot read: {kind}, " \
                                                  "not a regular file\n", r.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = _hzgen_stats(str(fifo), timeout=30)          # (it blocked for a writer)
    assert r.returncode == 2 and "a FIFO, not a regular file" in r.stderr
    big = tmp_path / "big.txt"                        # a report after 16 MiB of noise: refused
    with open(big, "w") as f:
        f.write(("x" * 1023 + "\n") * (16 << 10))
        f.write(_text_report())
    r = _hzgen_stats(str(big))
    assert r.returncode == 2 and r.stderr == f"hzgen stats: {big}: too large (more than 16 MiB)\n"
    r = _hzgen_stats(stdin=big.read_text())
    assert r.returncode == 2 and r.stderr == "hzgen stats: <stdin>: too large (more than 16 MiB)\n"
    r = _hzgen_stats(stdin=_text_report())
    assert r.returncode == 0 and "allocator x, level per_class" in r.stdout


def test_stats_plot_target_is_checked_before_anything_is_read(tmp_path):
    good = tmp_path / "r.txt"
    good.write_text(_text_report())
    (tmp_path / "adir").mkdir()
    cases = {str(tmp_path / "none" / "sub" / "x.png"): "no such directory",
             str(tmp_path / "adir"): "is a directory",
             "": "empty file name",
             "/proc/x.png": "cannot create a file in /proc",
             "/dev/null": "is a device, not a regular file"}
    for target, message in cases.items():
        r = _hzgen_stats(str(good), "--plot", target)
        assert r.returncode == 2 and message in r.stderr, (target, r.stderr)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1
        assert "Errno" not in r.stderr and ".png." not in r.stderr     # (no temporary file)
    assert not (tmp_path / "none").exists()          # the missing directories were not made
    assert os.listdir(tmp_path / "adir") == []


def test_stats_rows_match_the_level(tmp_path):
    """The box writes exactly one row for level counters (class `all` in text, class 0 in
    JSON) and one row per class for per_class: anything else is not a report of it."""
    (one,) = parse(json.dumps(_json_report()))
    assert list(one.rows) == ["all"] and one.rows["all"]["alloc"] == 1
    two = [{"class": c, "size": 16 * (c + 1), **dict.fromkeys(FIELDS, c + 1)} for c in (0, 1)]
    (per,) = parse(json.dumps(_json_report("per_class", two)))
    assert per.rows[1]["alloc"] == 2 and per.rows[1]["size"] == 32
    # per-class rows labelled counters were summed into one row holding the last class
    _refused(json.dumps(_json_report("counters", two)), "level counters has one row")
    _refused(json.dumps(_json_report("counters", [])), "level counters has one row")
    _refused(json.dumps(_json_report("per_class", two + two[:1])), "class 0 appears twice")
    _refused(json.dumps(_json_report(level=["x"])), "level: expected counters or per_class")
    _refused(json.dumps(_json_report(level="lots")), "level: expected counters or per_class")
    _refused(json.dumps(_json_report(hz_stats=True)), "not an hz_stats version 1 report")
    _refused(json.dumps(_json_report(hz_stats=1.0)), "not an hz_stats version 1 report")
    _refused(json.dumps(_json_report(allocator=["x"])), "allocator: expected a name")
    _refused(json.dumps(_json_report(classes="x")), "classes: expected a list")
    _refused(json.dumps(_json_report(classes=["x"])), "classes[0]: expected an object")
    _refused(json.dumps(_json_report(memory=[])), "memory: expected an object")
    _refused(json.dumps(_json_report()).replace('"alloc": 1', '"alloc": true'),
             "expected a count, got true")
    # the text form
    assert list(parse(_text_report("counters", (("all", "-", "5"),)))[0].rows) == ["all"]
    _refused(_text_report("counters", (("0", "16", "5"), ("1", "32", "5"))), "level counters has one row")
    _refused(_text_report("counters", (("all", "-", "5"), ("all", "-", "5"))), "level counters has one row")
    _refused(_text_report("per_class", (("0", "16", "5"), ("0", "16", "5"))), "class 0 appears twice")
    _refused(_text_report("lots"), "unknown stats level 'lots'")
    for text in (json.dumps(_json_report("counters", two)), json.dumps(_json_report(level=["x"]))):
        p = tmp_path / "r.json"
        p.write_text(text)
        r = _hzgen_stats(str(p))
        assert r.returncode == 2 and r.stderr.startswith(f"hzgen stats: {p}:1: malformed report")
        assert "Traceback" not in r.stderr
