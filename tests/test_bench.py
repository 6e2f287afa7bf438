"""Tests of the benchmark driver (hzgen.bench) and the bench/*.c workloads.

The end-to-end test runs every workload at a tiny scale with glibc and one
fake spec.  The fake spec's "allocator" is a preload library that only
records that it was loaded, so the test can check LD_PRELOAD reaches the
workloads (and only them).  A stand-in `perf` makes the instructions-per-
pair arithmetic testable on machines without hardware counters, and a
stand-in `valgrind` the callgrind fallback; where valgrind is installed the
real callgrind path is run too (at a small pair count).  Timing is never
asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections import Counter
import os
import resource
import shutil
import signal
import stat
import subprocess
import time
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hzgen import bench

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MARKER_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void hz_mark(void) {
    int fd = open(MARK, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { (void)!write(fd, "x\n", 2); close(fd); }
}
"""

# The same, writing the loading process's executable.
MARKER_EXE_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void hz_mark_exe(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) n = 0;
    exe[n++] = '\n';
    int fd = open(MARK, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { (void)!write(fd, exe, (size_t)n); close(fd); }
}
"""

def _marker_lib(tmp_path: Path, source: str = MARKER_C) -> tuple[Path, Path]:
    """A preload library built from `source` (MARKER_C or MARKER_EXE_C) and its marker file."""
    marker = tmp_path / "preloaded.txt"
    src = tmp_path / "marker.c"
    src.write_text(source)
    lib = tmp_path / "libmarker.so"
    subprocess.run(["cc", "-shared", "-fPIC", f'-DMARK="{marker}"', "-o", str(lib), str(src)],
                   check=True)
    return lib, marker


# The start of a stand-in for `perf stat -x, -e EVENT -o FILE -- CMD...`: takes the -o FILE,
# leaves CMD... in "$@".
_FAKE_PERF_ARGS = r"""#!/bin/sh
out=""
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    if [ "$1" = "-o" ]; then shift; out="$1"; fi
    shift
done
shift
"""

# runs CMD and reports 1000 + 50 * (the value of CMD's -n option) instructions.
FAKE_PERF = _FAKE_PERF_ARGS + r"""n=0; prev=""
for a in "$@"; do [ "$prev" = "-n" ] && n="$a"; prev="$a"; done
"$@"
rc=$?
echo "$((1000 + 50 * n)),,instructions,1000,100.00,," > "$out"
exit $rc
"""

# `perf` in a VM without a PMU: exits 0 but cannot count.
FAKE_PERF_UNSUPPORTED = _FAKE_PERF_ARGS + r""""$@"
rc=$?
echo "<not supported>,,instructions,0,100.00,," > "$out"
exit $rc
"""

# Stand-in for `valgrind --tool=callgrind [OPTIONS] CMD...`: runs CMD and
# reports 2000 + 70 * (the value of CMD's -n option) instructions the way
# callgrind does, on stderr.
FAKE_VALGRIND = r"""#!/bin/sh
while [ "$#" -gt 0 ]; do
    case "$1" in
    --version) echo valgrind-0.fake; exit 0 ;;
    -*) shift ;;
    *) break ;;
    esac
done
n=0; prev=""
for a in "$@"; do [ "$prev" = "-n" ] && n="$a"; prev="$a"; done
"$@"
rc=$?
echo "==4242== Events    : Ir" >&2
echo "==4242== Collected : $((2000 + 70 * n))" >&2
echo "==4242== " >&2
echo "==4242== I   refs:      $((2000 + 70 * n))" >&2
exit $rc
"""

CALLGRIND_STDERR = """==22986== Callgrind, a call-graph generating cache profiler
==22986== Command: build/bench/tiny -z 16 -n 131072
==22986==
RESULT-like noise from the workload: Collected : 99
==22986== Events    : Ir
==22986== Collected : 25905697
==22986==
==22986== I   refs:      25,905,697
"""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hzgen bench")
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def fake_builder(override=None, name="fakespec"):
    calls: list[Path] = []

    def build_spec(path):
        calls.append(Path(path))
        return SimpleNamespace(name=name, override=override)

    build_spec.calls = calls  # type: ignore[attr-defined]
    return build_spec


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    p = tmp_path / "fake.yaml"
    p.write_text("name: fakespec\n")
    return p


@pytest.fixture
def private_build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "build-bench"
    monkeypatch.setattr(bench, "BUILD_DIR", d)
    return d


# --------------------------------------------------------------------------
# End to end


@needs_cc
def test_suite_end_to_end(tmp_path, spec_file, private_build_dir, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    lib, marker = _marker_lib(tmp_path)
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    perf = fakebin / "perf"
    perf.write_text(FAKE_PERF)
    perf.chmod(perf.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fakebin}{os.pathsep}{os.environ.get('PATH', '')}")

    out_json = tmp_path / "out.json"
    out_png = tmp_path / "out.png"
    build_spec = fake_builder(override=lib)
    args = parse([str(spec_file), "--peers", "glibc", "--pairs", "1", "--scale", "0.02",
                  "--json", str(out_json), "--plot", str(out_png)])
    rc = bench.run(args, build_spec=build_spec)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert build_spec.calls == [spec_file]

    all_names = [v.name for v in bench.SUITE]
    # the table: one block per workload, both allocators, a geomean footer
    for name in all_names:
        assert any(line.startswith(name + " ") for line in captured.out.splitlines()), name
    assert "fakespec" in captured.out and "glibc" in captured.out
    assert "geomean" in captured.out
    # one run per allocator: no confidence interval, so no verdict either
    assert "95% CI" in captured.out
    assert "  tiny16     too few runs for glibc" in captured.out

    data = json.loads(out_json.read_text())
    assert data["meta"]["baseline"] == "fakespec"
    assert data["meta"]["allocator_names"] == ["fakespec", "glibc"]
    assert data["meta"]["perf_event"] == "instructions"
    assert data["meta"]["instructions_method"] == "perf"
    assert "instr/pair: perf instructions" in captured.out
    assert list(data["workloads"]) == all_names
    for name, w in data["workloads"].items():
        v = bench.VARIANT_BY_NAME[name]
        assert w["runs"] == v.pair_factor
        for alloc in ("fakespec", "glibc"):
            samples = w["samples"][alloc]
            assert len(samples) == w["runs"]
            assert all(s["ok"] for s in samples), samples
            assert all(s["ops"] > 0 and s["rss_kb"] > 0 for s in samples)
            assert w["median_ops_per_sec"][alloc] > 0
            assert w["median_ratio"][alloc] > 0
            assert w["rss_peak_kb"][alloc] > 0
            assert w["failures"][alloc] == 0
        assert w["median_ratio"]["fakespec"] == 1.0
        if v.instructions:
            # fake perf: 50 instructions per -n unit
            for alloc in ("fakespec", "glibc"):
                assert w["instructions_per_pair"][alloc] == pytest.approx(50.0)
        else:
            assert w["instructions_per_pair"] == {}
    fp = data["workloads"]["footprint"]["fields_median"]["glibc"]
    assert fp["rss_peak_kb"] > 0 and fp["rss_after_free_kb"] > 0
    assert fp["rss_peak_kb"] >= fp["rss_at_free_kb"]

    # LD_PRELOAD reached every run of the spec and nothing else (not glibc's
    # runs, not /usr/bin/time or perf themselves).
    spec_runs = sum(w["runs"] for w in data["workloads"].values())
    perf_runs = 2 * sum(1 for v in bench.SUITE if v.instructions)
    assert len(marker.read_text().splitlines()) == spec_runs + perf_runs

    png = out_png.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


@needs_cc
def test_real_programs_run_on_the_allocator_under_test(tmp_path, spec_file, private_build_dir,
                                                       capsys):
    """`--workloads real`: python3, sqlite3, cc and redis-server run under the spec's library
    (and glibc's runs under none; redis-benchmark, the load generator, under none either); the
    marker records every executable that loaded it."""
    if not shutil.which("python3"):
        pytest.skip("python3 is not installed")
    redis = all(shutil.which(p) for p in ("redis-server", "redis-benchmark"))
    lib, marker = _marker_lib(tmp_path, MARKER_EXE_C)
    out_json = tmp_path / "real.json"
    args = parse([str(spec_file), "--peers", "glibc", "--workloads", "real", "--pairs", "1",
                  "--scale", "0.05", "--json", str(out_json)])
    rc = bench.run(args, build_spec=fake_builder(override=lib))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(out_json.read_text())
    assert list(data["workloads"]) == ["py", "sqlite", "cc"] + (["redis"] if redis else [])
    for name, w in data["workloads"].items():
        for alloc in ("fakespec", "glibc"):
            assert all(x["ok"] and x["ops"] > 0 for x in w["samples"][alloc]), (name, w)
    loaded = [Path(x).name for x in marker.read_text().splitlines()]
    assert loaded.count("realprog") == 3 + redis, loaded  # the spec's runs only
    assert sum(n.startswith("python3") for n in loaded) == 2, loaded
    assert "cc1" in loaded, loaded                         # cc's compiler proper too
    if redis:
        server = Path(os.path.realpath(shutil.which("redis-server"))).name  # Debian: a symlink
        assert loaded.count(server) == 1 and "redis-benchmark" not in loaded, loaded
    else:
        assert "redis needs " in captured.err, captured.err


def test_workloads_whose_programs_are_missing_are_skipped_with_a_hint(monkeypatch, capsys):
    real = bench.select_variants("real")
    monkeypatch.setattr(bench.shutil, "which",
                        lambda name: None if name.startswith("redis") else "/usr/bin/" + name)
    assert [v.name for v in bench.runnable_variants(real)] == ["py", "sqlite", "cc"]
    err = capsys.readouterr().err
    assert "redis needs redis-server, redis-benchmark" in err
    assert "apt-get install redis-server redis-tools" in err
    with pytest.raises(bench.BenchError, match="none of the selected workloads"):
        bench.runnable_variants(bench.select_variants("redis"))


@needs_cc
def test_rebuild_only_when_source_is_newer(private_build_dir):
    exes = bench.compile_workloads(["tiny"])
    exe = exes["tiny"]
    first = exe.stat().st_mtime_ns
    os.utime(exe, ns=(first + 10**9, first + 10**9))  # binary newer than source
    again = bench.compile_workloads(["tiny"])["tiny"].stat().st_mtime_ns
    assert again == first + 10**9
    old = (bench.BENCH_DIR / "tiny.c").stat().st_mtime_ns - 10**9
    os.utime(exe, ns=(old, old))  # binary older than source: rebuilt
    assert bench.compile_workloads(["tiny"])["tiny"].stat().st_mtime_ns > old


@needs_cc
def test_tiny_instruction_mode_runs_exact_pair_counts(private_build_dir):
    exe = bench.compile_workloads(["tiny"])["tiny"]
    for n, expect in ((1024, 1024), (1000, 896)):
        out = subprocess.run([str(exe), "-z", "32", "-n", str(n)], capture_output=True,
                             text=True, check=True).stdout
        res = bench.parse_result(out)
        assert res is not None and res["ops"] == expect and res["size"] == 32


# --------------------------------------------------------------------------
# Bad input: exit 2, one clear line, no traceback, nothing built


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "tiny16,nosuch"], "unknown workload 'nosuch'"),
    (["--peers", "glibc,ptmalloc9"], "unknown peer 'ptmalloc9'"),
    (["--pairs", "0"], "--pairs"),
])
def test_bad_input_exits_2(argv, message, spec_file, capsys):
    build_spec = fake_builder()
    rc = bench.run(parse([str(spec_file), *argv]), build_spec=build_spec)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err
    assert build_spec.calls == []


def test_missing_spec_exits_2(tmp_path, capsys):
    build_spec = fake_builder()
    missing = tmp_path / "nope.yaml"
    rc = bench.run(parse([str(missing), "--peers", "glibc"]), build_spec=build_spec)
    err = capsys.readouterr().err
    assert rc == 2
    assert f"spec not found: {missing}" in err
    assert build_spec.calls == []


@needs_cc
def test_unknown_baseline_exits_2(spec_file, private_build_dir, capsys):
    rc = bench.run(parse([str(spec_file), "--peers", "glibc", "--workloads", "tiny16",
                          "--baseline", "hoard"]), build_spec=fake_builder())
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown baseline 'hoard'" in err and "fakespec, glibc" in err


@needs_cc
def test_spec_build_failure_is_reported(spec_file, private_build_dir, capsys):
    def broken(path):
        raise RuntimeError("template exploded")

    rc = bench.run(parse([str(spec_file), "--peers", "glibc", "--workloads", "tiny16"]),
                   build_spec=broken)
    err = capsys.readouterr().err
    assert rc == 1
    assert "template exploded" in err and "Traceback" not in err


# --------------------------------------------------------------------------
# Pieces


def test_select_variants_by_program_and_name():
    names = [v.name for v in bench.select_variants("larson,tiny16")]
    assert names == ["larson1", "larson2", "larson4", "tiny16"]
    assert [v.name for v in bench.select_variants(None)] == [v.name for v in bench.SUITE]
    assert [v.name for v in bench.select_variants("real")] == ["py", "sqlite", "cc", "redis"]
    assert [v.name for v in bench.select_variants("all")] == [v.name for v in bench.VARIANTS]
    assert not any(v.real for v in bench.SUITE)
    assert {v.name for v in bench.VARIANTS} >= {
        "tiny16", "tiny32", "tiny64", "tiny256", "mixed", "larson1", "larson2", "larson4",
        "prodcons2", "prodcons4", "midsize2", "realloc", "scratch2", "churn", "footprint"}


def test_missing_peer_is_skipped_with_install_hint(monkeypatch, capsys):
    monkeypatch.setattr(bench, "find_peer", lambda name: None)
    peers = bench.resolve_peers(["glibc", "mimalloc", "tcmalloc"])
    err = capsys.readouterr().err
    assert [p.name for p in peers] == ["glibc"]
    assert "apt-get install libmimalloc2.0" in err
    assert "apt-get install libtcmalloc-minimal4" in err


def test_preload_goes_to_the_workload_only(tmp_path):
    exe = tmp_path / "tiny"
    v = bench.VARIANT_BY_NAME["tiny64"]
    so = tmp_path / "liba.so"
    cmd = bench.workload_command(exe, v, bench.Allocator("a", "spec", so), 0.5)
    assert cmd[1] == f"LD_PRELOAD={so}" and Path(cmd[0]).name == "env"
    assert cmd[2:] == [str(exe), "-z", "64", "-s", "0.5"]
    plain = bench.workload_command(exe, v, bench.Allocator("glibc", "peer", None), 1.0)
    assert plain == [str(exe), "-z", "64", "-s", "1.0"]


def test_parse_result_and_perf_output():
    res = bench.parse_result("noise\nRESULT name=tiny ops=128 seconds=0.5 ops_per_sec=256.0 size=16\n")
    assert res == {"name": "tiny", "ops": 128, "seconds": 0.5, "ops_per_sec": 256.0, "size": 16}
    assert bench.parse_result("RESULT name=x ops=1\n") is None
    assert bench.parse_perf_csv("<not supported>,,instructions,0,100.00,,\n") is None
    assert bench.parse_perf_csv("# started\n\n12345,,instructions:u,999,100.00,,\n") == 12345
    assert bench.parse_perf_csv("") is None


def test_summary_uses_paired_ratios():
    def s(x):
        return {"ok": True, "ops_per_sec": x, "rss_kb": 100, "fields": {"rss_after_free_kb": x}}

    samples = {"base": [s(100.0), s(200.0), s(100.0)],   # median 100
               "other": [s(200.0), s(200.0), {"ok": False, "error": "boom", "rss_kb": None}]}
    sm = bench.summarize(samples, "base")
    assert sm["median_ops_per_sec"] == {"base": 100.0, "other": 200.0}
    assert sm["median_ratio"]["other"] == pytest.approx(1.5)  # median of 2.0 and 1.0
    assert (sm["ratio_min"]["other"], sm["ratio_max"]["other"]) == (1.0, 2.0)
    assert sm["median_ratio"]["base"] == 1.0
    # the baseline's spread is its own runs over their median (its ratios to itself are all 1)
    assert (sm["ratio_min"]["base"], sm["ratio_max"]["base"]) == (1.0, 2.0)
    assert sm["failures"] == {"base": 0, "other": 1}
    assert sm["fields_median"]["base"]["rss_after_free_kb"] == 100.0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_round_order_is_balanced(n):
    """Over a period of rounds (n, or 2n for an odd n) every allocator runs in every position
    equally often and right after every other one equally often (a plain rotation gives each
    one the same predecessor in all but one round)."""
    names = [f"a{k}" for k in range(n)]
    period = n if n % 2 == 0 else 2 * n
    rows = [bench.round_order(names, i) for i in range(period)]
    assert all(sorted(r) == names for r in rows)
    positions = Counter((a, k) for r in rows for k, a in enumerate(r))
    assert set(positions.values()) == {period // n} and len(positions) == n * n
    after = Counter((r[k], r[k + 1]) for r in rows for k in range(n - 1))
    assert len(after) == n * (n - 1) and len(set(after.values())) <= 1
    assert bench.round_order(names, period) == rows[0]


@needs_cc
def test_the_suite_runs_in_the_balanced_order(tmp_path, spec_file, private_build_dir, monkeypatch,
                                              capsys):
    """The runs of a workload follow round_order round by round, and the paired ratios pair
    the runs of one round."""
    order: list[tuple[str, str]] = []

    def fake_sample(exe, variant, alloc, scale, timeout, use_time):
        order.append((variant.name, alloc.name))
        return {"ok": True, "ops_per_sec": float(len(order)), "rss_kb": 1, "fields": {}}

    monkeypatch.setattr(bench, "run_sample", fake_sample)
    monkeypatch.setattr(bench, "find_peer",
                        lambda name: Path("/fake/libmimalloc.so") if name == "mimalloc" else None)
    args = parse([str(spec_file), "--peers", "glibc,mimalloc", "--pairs", "4",
                  "--workloads", "realloc,larson2", "--json", str(tmp_path / "o.json")])
    assert bench.run(args, build_spec=fake_builder()) == 0
    names = ["fakespec", "glibc", "mimalloc"]
    for workload, rounds in (("realloc", 4), ("larson2", 8)):   # larson2 runs twice the pairs
        runs = [a for w, a in order if w == workload]
        assert runs == [a for i in range(rounds) for a in bench.round_order(names, i)]
    data = json.loads((tmp_path / "o.json").read_text())
    first = [i for i, (w, _) in enumerate(order) if w == "realloc"]
    glibc_first = first[bench.round_order(names, 0).index("glibc")]
    assert data["workloads"]["realloc"]["samples"]["glibc"][0]["ops_per_sec"] == glibc_first + 1
    assert "realloc" in capsys.readouterr().out


def test_median_ci_is_the_order_statistic_interval():
    xs = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]
    # n = 9: 2nd smallest .. 2nd largest; misses the median when 0 or 1 of 9 fall below it
    assert bench.median_ci(xs) == (2.0, 8.0, pytest.approx(1 - 2 * 10 / 512))
    assert bench.median_ci(xs[:6]) == (1.0, 9.0, pytest.approx(1 - 2 / 64))   # min..max
    assert bench.median_ci(xs[:5]) is None       # min..max covers only 93.75%
    assert bench.median_ci([]) is None


def test_median_ci_covers_the_true_median_as_often_as_it_says():
    import random

    rnd = random.Random(7)
    for n in (6, 9, 18):
        trials, hits, said = 4000, 0, None
        for _ in range(trials):
            # skewed, like run times: lognormal with median exp(0) = 1
            ci = bench.median_ci([rnd.lognormvariate(0.0, 0.5) for _ in range(n)])
            assert ci is not None
            hits += ci[0] <= 1.0 <= ci[1]
            said = ci[2]
        assert said >= bench.CI_LEVEL
        assert abs(hits / trials - said) < 0.015, (n, hits / trials, said)


def test_verdict_from_the_intervals():
    v = bench.verdict({"base": None, "slow": [0.5, 0.9], "same": [0.9, 1.1],
                       "fast": [1.05, 1.3], "few": None}, "base")
    assert v == {"ahead_of": ["slow"], "tie_with": ["same"], "behind": ["fast"],
                 "undecided": ["few"]}


def _saved_result(ratios: dict[str, list[float]], workload: str = "tiny16") -> dict:
    """A result file like --json writes, with paired runs at the given ratios to `base`."""
    n = len(next(iter(ratios.values())))
    names = ["base"] + list(ratios)
    samples = {"base": [{"ok": True, "ops_per_sec": 100.0, "rss_kb": 1000} for _ in range(n)]}
    for a, rs in ratios.items():
        samples[a] = [{"ok": True, "ops_per_sec": 100.0 * r, "rss_kb": 1000} for r in rs]
    return {"version": 1,
            "meta": {"baseline": "base", "allocator_names": names, "pairs": n, "scale": 1.0,
                     "rss_source": "wait4 ru_maxrss"},
            "allocators": [],
            "workloads": {workload: {"program": "tiny", "args": [], "runs": n, "spread": False,
                                     "instructions": False, "samples": samples,
                                     "instructions_per_pair": {}}}}


def test_from_reports_and_pools_saved_runs(tmp_path, capsys):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(_saved_result({"peer": [0.8, 0.9, 0.85], "twin": [1.0, 0.9, 1.1]})))
    b.write_text(json.dumps(_saved_result({"peer": [0.7, 0.95, 0.9], "twin": [1.05, 0.95, 1.0]})))
    assert bench.run(parse(["--from", str(a)])) == 0
    out = capsys.readouterr().out
    assert "too few runs for peer, twin" in out      # 3 pairs: no 95% interval
    pooled = tmp_path / "pooled.json"
    assert bench.run(parse(["--from", str(a), str(b), "--json", str(pooled)])) == 0
    out = capsys.readouterr().out
    data = json.loads(pooled.read_text())
    w = data["workloads"]["tiny16"]
    assert w["runs"] == 6 and len(w["samples"]["peer"]) == 6
    assert w["ratio_ci"]["peer"] == [pytest.approx(0.7), pytest.approx(0.95)]   # min..max of 6
    assert w["verdict"] == {"ahead_of": ["peer"], "tie_with": ["twin"], "behind": [],
                            "undecided": []}
    assert data["meta"]["pairs"] == 6 and data["meta"]["pooled_from"] == [str(a), str(b)]
    assert "tiny16  ahead of peer; tie with twin (0.90..1.10)" in out
    assert "0.70..0.95" in out
    # a different baseline turns the ratios around
    assert bench.run(parse(["--from", str(pooled), "--baseline", "peer"])) == 0
    assert "tiny16  tie with twin (1.00..1.50); behind base (1.05..1.43)" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ('{"version": 1, "workloads": {}}', "not a result file"),
    ('{"version": 7}', "not a result file"),
    ("[1, 2]", "not a result file"),
])
def test_from_bad_files_exit_2(tmp_path, capsys, content, message):
    f = tmp_path / "r.json"
    if content is not None:
        f.write_text(content)
    assert bench.run(parse(["--from", str(f)])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_from_refuses_to_pool_different_allocators(tmp_path, capsys):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(_saved_result({"peer": [0.8] * 6})))
    b.write_text(json.dumps(_saved_result({"other": [0.8] * 6})))
    assert bench.run(parse(["--from", str(a), str(b)])) == 2
    assert "cannot pool them" in capsys.readouterr().err
    assert bench.run(parse(["--from", str(a), "--baseline", "nope"])) == 2
    assert "unknown baseline 'nope'" in capsys.readouterr().err
    small = _saved_result({"peer": [0.8] * 6})
    small["meta"]["scale"] = 0.01
    b.write_text(json.dumps(small))
    assert bench.run(parse(["--from", str(a), str(b)])) == 2
    assert "ran at scale 0.01" in capsys.readouterr().err
    cut = _saved_result({"peer": [0.8] * 6})
    cut["workloads"]["tiny16"]["samples"]["peer"].pop()
    b.write_text(json.dumps(cut))
    assert bench.run(parse(["--from", str(b)])) == 2
    assert "unequal numbers of runs" in capsys.readouterr().err


DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hzgen_bench(*args: str, limits: dict | None = None, timeout: float = 120):
    """`hzgen bench ARGS` in a child (with resource limits: {RLIMIT_...: bytes})."""
    def preexec() -> None:
        for what, n in (limits or {}).items():
            resource.setrlimit(what, (n, n))

    env = dict(os.environ, PYTHONPATH=str(Path(bench.__file__).resolve().parent.parent))
    return subprocess.run([sys.executable, "-m", "hzgen.cli", "bench", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, preexec_fn=preexec)


def _set(path: str, value):
    """A change to a saved result: the value at a dotted path (None: the key removed)."""
    def change(r: dict) -> None:
        *head, last = path.split(".")
        for k in head:
            r = r[int(k)] if isinstance(r, list) else r[k]
        key = int(last) if isinstance(r, list) else last
        if value is None:
            del r[key]
        else:
            r[key] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("workloads.tiny16.runs", None), "workloads.tiny16.runs: missing"),
    (_set("workloads.tiny16.spread", None), "workloads.tiny16.spread: missing"),
    (_set("workloads.tiny16.instructions", "yes"), "workloads.tiny16.instructions: expected true or false"),
    (_set("workloads.tiny16.samples.peer.0.fields", [1]), "samples.peer[0].fields: expected an object"),
    (_set("workloads.tiny16.samples.peer.0.fields", {"x": [1]}), "samples.peer[0].fields.x: expected a number"),
    (_set("workloads.tiny16.samples.peer.0.ops_per_sec", -5.0), "samples.peer[0].ops_per_sec: expected a number >= 0, got -5.0"),
    (_set("workloads.tiny16.samples.peer.0.ops_per_sec", "fast"), "expected a number >= 0, got 'fast'"),
    (_set("workloads.tiny16.samples.peer.0.ops_per_sec", 10 ** 400), "got a huge number"),
    (_set("workloads.tiny16.samples.peer.0.ops_per_sec", None), "samples.peer[0].ops_per_sec: missing"),
    (_set("workloads.tiny16.samples.peer.0.ok", 1), "samples.peer[0].ok: expected true or false"),
    (_set("workloads.tiny16.samples.peer.0", [1]), "samples.peer[0]: expected an object, got a list"),
    (_set("workloads.tiny16.samples.peer", None), "workloads.tiny16.samples.peer: missing"),
    (_set("workloads.tiny16.samples.ghost", []), "'ghost' is not one of meta.allocator_names"),
    (_set("workloads.tiny16.instructions_per_pair", {"peer": "many"}), "instructions_per_pair.peer"),
    (_set("workloads.tiny16", []), "workloads.tiny16: expected an object, got a list"),
    (_set("workloads", []), "workloads: expected an object"),
    (_set("meta.baseline", None), "meta.baseline: missing"),
    (_set("meta.baseline", "nobody"), "meta.baseline: expected one of meta.allocator_names"),
    (_set("meta.allocator_names", [["base"], "peer"]), "meta.allocator_names[0]: expected a name, got a list"),
    (_set("meta.allocator_names", "base"), "meta.allocator_names: expected a list of allocator names, got 'base'"),
    (_set("meta.allocator_names", ["base", "peer", "peer"]), "'peer' appears twice"),
    (_set("meta.allocator_names", []), "meta.allocator_names: expected a list"),
    (_set("meta.pairs", True), "meta.pairs: expected a whole number >= 1, got true"),
    (_set("meta.scale", None), "meta.scale: missing"),
    (_set("meta.instructions_method", "perf"), "meta.perf_event: missing"),
    (_set("meta", []), "meta: expected an object, got a list"),
    (_set("version", True), "version: expected 1, got true"),
    (lambda r: r.clear(), "version: missing"),
])
def test_from_refuses_incomplete_results_with_the_reason(tmp_path, capsys, change, message):
    """A saved result is checked when it is read: every key the report reads, of the type
    run() writes; what is wrong is said, never a KeyError, TypeError or AttributeError."""
    r = _saved_result({"peer": [0.8] * 6})
    change(r)
    f = tmp_path / "r.json"
    f.write_text(json.dumps(r))
    assert bench.run(parse(["--from", str(f)])) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"hzgen bench: {f}: not a result file of hzgen bench --json (")
    assert message in captured.err and captured.err.endswith(")\n"), captured.err
    assert len(captured.err.splitlines()) == 1


def test_from_refuses_a_top_level_list_or_an_unreadable_number(tmp_path, capsys):
    f = tmp_path / "r.json"
    for text, message in (("[]", "(the top level is a list, not an object)"),
                          ('{"version": ' + "9" * 5000 + "}", "is not JSON: a number too long"),
                          (b'{"version": 1, "x": "\xff"}', "is not JSON: not UTF-8 text")):
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        assert bench.run(parse(["--from", str(f)])) == 2
        err = capsys.readouterr().err
        assert message in err and "has no attribute" not in err and "Exceeds" not in err, err


@pytest.mark.parametrize("name", ["bench-default.json", "bench-real.json"])
def test_from_accepts_what_bench_json_writes(name, tmp_path, capsys):
    """The shipped results (written by `hzgen bench --json`) load, and so does what --from
    writes again; the pooled file holds the same runs."""
    saved = DOCS / name
    original = json.loads(saved.read_text())
    assert bench.run(parse(["--from", str(saved)])) == 0
    first = capsys.readouterr().out
    again = tmp_path / "again.json"
    assert bench.run(parse(["--from", str(saved), "--json", str(again)])) == 0
    assert capsys.readouterr().out == first
    data = json.loads(again.read_text())
    assert data["meta"]["allocator_names"] == original["meta"]["allocator_names"]
    for wname, w in original["workloads"].items():
        assert data["workloads"][wname]["samples"] == w["samples"]
    assert bench.run(parse(["--from", str(again)])) == 0
    assert capsys.readouterr().out == first
    assert sorted(os.listdir(tmp_path)) == ["again.json"]       # no temporary file left


def test_from_reads_only_regular_files_of_bounded_size(tmp_path, capsys, monkeypatch):
    # /dev/zero never ends (it was read until MemoryError), a FIFO blocked for a writer
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "a device"), (str(fifo), "a FIFO"), (str(tmp_path), "a directory")):
        r = _hzgen_bench("--from", path, limits={resource.RLIMIT_AS: 1 << 30},
                         timeout=30)
        assert r.returncode == 2, r.stderr[-500:]
        assert r.stderr == f"hzgen bench: {path}: cannot read: {kind}, not a regular file\n"
    # larger than the bound: an error, not a truncated read
    f = tmp_path / "r.json"
    f.write_text(json.dumps(_saved_result({"peer": [0.8] * 6})))
    monkeypatch.setattr(bench, "MAX_RESULT", f.stat().st_size - 1)
    assert bench.run(parse(["--from", str(f)])) == 2
    assert capsys.readouterr().err == (f"hzgen bench: {f}: too large "
                                       f"(more than {f.stat().st_size - 1} bytes)\n")
    monkeypatch.setattr(bench, "MAX_RESULT", f.stat().st_size)
    assert bench.run(parse(["--from", str(f)])) == 0


def test_from_json_is_written_whole_or_not_at_all(tmp_path):
    """Under a file size limit (ulimit -f) the JSON and the chart are not left truncated."""
    out = tmp_path / "out.json"
    r = _hzgen_bench("--from", str(DOCS / "bench-default.json"), "--json", str(out),
                     limits={resource.RLIMIT_FSIZE: 100 << 10})
    assert r.returncode == 1 and r.stderr == f"hzgen bench: cannot write {out}: File too large\n"
    assert os.listdir(tmp_path) == []
    if importlib.util.find_spec("matplotlib"):
        # matplotlib's first import writes a font cache: not under the limit (on a fresh machine
        # that write failed too, and its warning was in stderr)
        subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], check=True)
        png = tmp_path / "out.png"
        r = _hzgen_bench("--from", str(DOCS / "bench-default.json"), "--plot", str(png),
                         limits={resource.RLIMIT_FSIZE: 1 << 10})
        assert r.returncode == 1 and r.stderr == f"hzgen bench: cannot write {png}: File too large\n"
        assert os.listdir(tmp_path) == []


def test_from_output_targets_are_checked_before_reading(tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(_saved_result({"peer": [0.8] * 6})))
    (tmp_path / "adir").mkdir()
    cases = [("--json", str(tmp_path / "adir"), "is a directory"),
             ("--plot", str(tmp_path / "adir"), "is a directory"),
             ("--json", "/proc/x.json", "cannot create a file in /proc"),
             ("--plot", "/proc/x.png", "cannot create a file in /proc"),
             ("--json", str(tmp_path / "none" / "x.json"), "no such directory"),
             ("--json", "/dev/null", "is a device, not a regular file"),
             ("--json", "", "empty file name"),
             ("--plot", "", "empty file name")]
    for option, target, message in cases:
        for source in (f, tmp_path / "missing.json"):    # said before the input is read
            assert bench.run(parse(["--from", str(source), f"{option}={target}"])) == 2
            captured = capsys.readouterr()
            assert captured.out == "" and captured.err.startswith(f"hzgen bench: {option}"), \
                captured.err
            assert message in captured.err and "Errno" not in captured.err
    assert sorted(os.listdir(tmp_path)) == ["adir", "r.json"] and not os.listdir(tmp_path / "adir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_from_output_into_an_unwritable_directory(tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(_saved_result({"peer": [0.8] * 6})))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert bench.run(parse(["--from", str(f), "--json", str(ro / "x.json")])) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hzgen bench: --json {ro / 'x.json'}: cannot create a file in")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------
# Instructions per pair without perf: the callgrind fallback



def _fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    for name, text in scripts.items():
        tool = fakebin / name
        tool.write_text(text)
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fakebin}{os.pathsep}{os.environ.get('PATH', '')}")


def test_parse_callgrind_collected():
    assert bench.parse_callgrind_collected(CALLGRIND_STDERR) == 25905697
    assert bench.parse_callgrind_collected("==1== Collected : 10\n==2== Collected : 5\n") == 15
    assert bench.parse_callgrind_collected("==1== Events    : Ir\n") is None
    assert bench.parse_callgrind_collected("") is None


@needs_cc
def test_callgrind_fallback_when_perf_cannot_count(tmp_path, spec_file, private_build_dir,
                                                   monkeypatch, capsys):
    lib, marker = _marker_lib(tmp_path)
    _fake_tools(tmp_path, monkeypatch, perf=FAKE_PERF_UNSUPPORTED, valgrind=FAKE_VALGRIND)
    out_json = tmp_path / "out.json"
    args = parse([str(spec_file), "--peers", "glibc", "--workloads", "tiny16,realloc",
                  "--pairs", "1", "--scale", "0.02", "--json", str(out_json)])
    rc = bench.run(args, build_spec=fake_builder(override=lib))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(out_json.read_text())
    meta = data["meta"]
    assert meta["instructions_method"] == "callgrind"
    assert meta["perf_event"] is None
    assert meta["instructions_counter"].startswith("callgrind (valgrind-0.fake")
    pairs = meta["instr_pairs"]
    assert pairs % 128 == 0 and pairs >= 1024
    # fake callgrind: 70 instructions per -n unit
    ipp = data["workloads"]["tiny16"]["instructions_per_pair"]
    assert ipp == {"fakespec": pytest.approx(70.0), "glibc": pytest.approx(70.0)}
    assert data["workloads"]["realloc"]["instructions_per_pair"] == {}
    assert f"instr/pair: callgrind (valgrind-0.fake, simulated CPU), {pairs} vs {2 * pairs} pairs" \
        in captured.out
    tiny_rows = [line for line in captured.out.splitlines()
                 if line.startswith("tiny16") or line.lstrip().startswith("glibc")][:2]
    assert all(row.split()[-1] == "70.0" for row in tiny_rows), tiny_rows
    # the spec's library reached its timed runs (tiny16, realloc) and its two
    # counted runs, and not the (fake) valgrind, the probe or glibc's runs
    assert len(marker.read_text().splitlines()) == 2 + 2


@needs_cc
def test_no_instruction_counter_shows_na(spec_file, private_build_dir, monkeypatch, tmp_path,
                                         capsys):
    monkeypatch.setattr(bench, "perf_instructions_event", lambda: None)
    monkeypatch.setattr(bench, "callgrind_version", lambda: None)
    out_json = tmp_path / "out.json"
    rc = bench.run(parse([str(spec_file), "--peers", "glibc", "--workloads", "tiny16",
                          "--pairs", "1", "--scale", "0.02", "--json", str(out_json)]),
                   build_spec=fake_builder())
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(out_json.read_text())
    assert data["meta"]["instructions_method"] is None and data["meta"]["instr_pairs"] is None
    assert data["workloads"]["tiny16"]["instructions_per_pair"] == {"fakespec": None,
                                                                     "glibc": None}
    assert "instr/pair: n/a" in captured.out


needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None,
                                    reason="needs valgrind (apt-get install valgrind)")


@needs_cc
@needs_valgrind
def test_callgrind_counts_the_preloaded_allocator(tmp_path, private_build_dir):
    """The real callgrind path, at a small pair count: glibc and one
    installed peer give plausible, different counts, and LD_PRELOAD reaches
    the counted workload but not valgrind."""
    version = bench.callgrind_version()
    assert version is not None and version.startswith("valgrind")
    counter = bench.InstrCounter("callgrind", version=version)
    exe = bench.compile_workloads(["tiny"])["tiny"]
    v = bench.VARIANT_BY_NAME["tiny32"]
    allocs = [bench.Allocator("glibc", "peer", None)]
    for name in ("mimalloc", "jemalloc", "tcmalloc"):
        path = bench.find_peer(name)
        if path is not None:
            allocs.append(bench.Allocator(name, "peer", path))
            break
    got = {}
    for a in allocs:
        errors: list[str] = []
        ipp = bench.instructions_per_pair(exe, v, a, counter, 2048, 300, errors)
        assert ipp is not None, (a.name, errors)
        assert 10 < ipp < 1000, (a.name, ipp)
        got[a.name] = ipp
    if len(got) == 2:
        assert abs(got["glibc"] - got[allocs[1].name]) > 1, got  # not both glibc

    # Which processes loaded the preloaded library: the workload once per
    # counted run (N and 2N), and otherwise only valgrind's launcher, which
    # re-executes with the client's environment to follow env's exec; not
    # the valgrind wrapper script, env(1) or the counting tool.
    lib, marker = _marker_lib(tmp_path, MARKER_EXE_C)
    ipp = bench.instructions_per_pair(exe, v, bench.Allocator("m", "spec", lib), counter,
                                      1024, 300)
    assert ipp is not None and 10 < ipp < 1000
    loaded = marker.read_text().splitlines()
    assert loaded.count(str(exe.resolve())) == 2, loaded
    others = {Path(x).name for x in loaded if x != str(exe.resolve())}
    assert others <= {"valgrind.bin", "valgrind"}, loaded


def test_an_interrupted_run_leaves_no_workload_behind():
    """Ctrl-C (or SIGTERM) while a workload runs: its process group is killed and reaped
    before the interrupt goes on (it runs in a session of its own, so nothing else would stop
    it; before, it went on running after hzgen had left)."""
    marker = f"{time.time():.6f}"
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            bench.spawn(["sh", "-c", f"sleep 30; : {marker}"], timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    left = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and marker in (p / "cmdline").read_bytes().decode(errors="replace"):
                left.append(p.name)
        except OSError:      # gone meanwhile
            pass
    assert left == [], left
