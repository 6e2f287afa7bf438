"""Unusual but valid specs (tests/specs/): every combination the language accepts must compile
warning-free and run a threaded stress, fork and a real program (an edge value once broke the
build: max_dirty 0 made a comparison always false under -Werror)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, built_spec, compile_c, preload_env

VARIANTS = sorted((REPO / "tests" / "specs").glob("*.yaml"))


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    out = tmp_path_factory.mktemp("vprog")
    return {n: compile_c(REPO / "tests" / "c" / f"{n}.c", out / n) for n in ("stress", "forktest", "remote_idle")}


@pytest.mark.parametrize("spec", VARIANTS, ids=[p.stem for p in VARIANTS])
def test_variant_builds_and_runs(spec, build_root, programs):
    built = built_spec(spec, build_root)
    env = preload_env(built)
    # remote_idle race: the idle-heap collector (variant_extremes: after 1 ms) meets the owner
    for cmd in ([programs["stress"], 8, 3, 6000], [programs["forktest"], 10],
                [programs["remote_idle"], "race", 3],
                [sys.executable, "-c", "import sqlite3, threading; c = sqlite3.connect(':memory:');"
                 "c.execute('create table t(a)'); c.executemany('insert into t values(?)',"
                 "((i,) for i in range(20000))); print(c.execute('select sum(a) from t').fetchone()[0])"]):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=180)
        assert r.returncode == 0, (cmd[0], r.stderr[-2000:])
    assert "199990000" in r.stdout
