"""The command line contract (DESIGN §2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def hzgen(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "hzgen.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_build_last_line_is_the_preload_library(tmp_path):
    r = hzgen("build", "specs/default.yaml", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    lib = Path(last)
    assert lib.is_absolute() and lib.name == "libhz_default.so" and lib.is_file()
    assert (tmp_path / "generated" / "default" / "hz_static.c").is_file()
    # the override library exports the libc names; the prefixed one only hz_default_*
    dyn = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in dyn.splitlines()}
    for name in ("malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
                 "aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size",
                 "free_sized", "free_aligned_sized", "cfree", "malloc_trim", "mallinfo2",
                 "malloc_stats", "mallopt"):
        assert name in exported, name
    assert not any(s.startswith("hz_") for s in exported)
    pre = lib.with_name("libhz_default_prefixed.so")
    dyn = subprocess.run(["nm", "-D", "--defined-only", str(pre)], capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in dyn.splitlines()}
    assert "hz_default_malloc" in exported and "malloc" not in exported


def test_classes_prints_the_table():
    r = hzgen("classes", "specs/default.yaml")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[1].split()[:5] == ["class", "size", "slab", "blocks", "waste%"]
    rows = lines[2:]
    from hzgen.pipeline import load_model
    m = load_model(REPO / "specs" / "default.yaml")
    assert len(rows) == len(m.classes)
    assert rows[0].split()[:2] == ["0", "16"] and rows[-1].split()[1] == str(m.small_max)


def test_a_reader_that_leaves_early_is_no_error():
    """`hzgen classes SPEC | head -1` whose reader is gone before hzgen writes: the closed pipe
    ends hzgen quietly with status 0 (it printed `hzgen: [Errno 32] Broken pipe`, exit 1)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "hzgen.cli", "classes", "specs/default.yaml"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    p.stdout.close()          # before the interpreter has even started: every write fails
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and err == "", err


def test_diff_status_survives_a_reader_that_left():
    """`hzgen diff A B | head`: the status still says the specs differ (1)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "hzgen.cli", "diff", "specs/default.yaml",
                          "specs/sll-only.yaml"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=REPO)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1 and err == "", err


def test_a_broken_stderr_is_no_success(tmp_path):
    """Only a closed stdout is a quiet exit: when stderr's reader left, build fails (1)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "hzgen.cli", "build", "specs/default.yaml",
                          "--root", str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=REPO)
    p.stderr.close()
    p.stdout.read()
    assert p.wait(timeout=300) == 1


def test_validate_ok():
    r = hzgen("validate", *[str(p.relative_to(REPO)) for p in sorted((REPO / "specs").glob("*.yaml"))])
    assert r.returncode == 0 and r.stdout.count(": ok") == len(list((REPO / "specs").glob("*.yaml")))


def test_compile_error_names_file_and_spec(tmp_path, monkeypatch):
    from hzgen import build as B
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "hz_static.c").write_text("int broken(void) { return nope; }\n")
    try:
        B.build("x", gen, tmp_path / "out", "specs/x.yaml")
    except B.BuildError as e:
        msg = str(e)
    else:
        raise AssertionError("compile error not reported")
    assert "hz_static.c:1" in msg and "specs/x.yaml" in msg
    assert not (tmp_path / "out" / "libhz_x.so").exists()
