"""The stats box: one report at exit with HZ_STATS=1 (text) or json; nothing when compiled out."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import REPO, compile_c, preload_env


@pytest.fixture(scope="session")
def stress_exe(tmp_path_factory):
    return compile_c(REPO / "tests" / "c" / "stress.c", tmp_path_factory.mktemp("st") / "stress")


def run_stress(built, model, exe, mode):
    threads = "8" if model.threads else "1"
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
