"""The command line contract (DESIGN §2)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def test_build_prints_an_absolute_path_for_a_relative_root(tmp_path):
    r = hzgen("build", str(REPO / "specs" / "single-thread.yaml"), "--root", "rel", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lib = Path(r.stdout.strip().splitlines()[-1])
    assert lib == tmp_path / "rel" / "build" / "single_thread" / "libhz_single_thread.so"
    assert lib.is_file()


def test_built_files_can_be_preloaded_by_other_users(tmp_path):
    """Libraries 0755 and generated trees 0755 under the usual umask, like a plain `cc`
    (before: mkstemp's 0711 and mkdtemp's 0700 survived the rename)."""
    r = hzgen("build", "specs/single-thread.yaml", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    mask = os.umask(0)
    os.umask(mask)
    for path, mode in ((tmp_path / "build" / "single_thread" / "libhz_single_thread.so", 0o777),
                       (tmp_path / "generated" / "single_thread", 0o777),
                       (tmp_path / "generated" / "single_thread" / "hz_static.c", 0o666)):
        assert path.stat().st_mode & 0o777 == mode & ~mask, (path, oct(path.stat().st_mode))


def test_build_refuses_two_specs_of_one_name_and_odd_files(tmp_path):
    twin = tmp_path / "twin.yaml"
    twin.write_text(f"name: single_thread\nextends: {REPO / 'specs' / 'single-thread.yaml'}\n"
                    "description: another\n")
    r = hzgen("build", "specs/single-thread.yaml", str(twin), "--root", str(tmp_path / "r"))
    assert r.returncode == 2 and "has the name 'single_thread' of" in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()                 # refused before anything was built
    for odd in ("/dev/zero", str(tmp_path)):
        r = hzgen("validate", odd)
        assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n" + "#" * (2 << 20) + "\n")
    r = hzgen("validate", str(big))
    assert r.returncode == 2 and "too large for a spec" in r.stderr, r.stderr


def test_a_spec_path_cannot_write_c(tmp_path):
    """The spec's path goes into every file's comment: a path that closes the comment stays
    inside it (before: the text after `*/` was compiled)."""
    odd = tmp_path / "x*/ int hz_injected = 42; /*y"
    odd.mkdir(parents=True)
    spec = odd / "s.yaml"
    spec.write_text((REPO / "specs" / "single-thread.yaml").read_text().replace(
        "extends: default.yaml", f"extends: {REPO / 'specs' / 'default.yaml'}"))
    r = hzgen("build", str(spec), "--root", str(tmp_path / "root"))
    assert r.returncode == 0, r.stderr
    lib = Path(r.stdout.strip().splitlines()[-1])
    syms = subprocess.run(["nm", str(lib)], capture_output=True, text=True).stdout
    assert "hz_injected" not in syms
    head = (tmp_path / "root" / "generated" / "single_thread" / "hz_config.h").read_text()
    first_comment = head[:head.index("*/") + 2]
    assert "hz_injected" in first_comment and first_comment.count("/*") == 1


def test_alias_bombs_and_deep_nesting_are_spec_errors(tmp_path):
    """A spec is small: nested aliases that expand to millions of values, or nesting
    thousands deep, are an error with a position, never a hang or a traceback."""
    bomb = tmp_path / "bomb.yaml"
    lines = ["name: bomb", "a: &a [1]"]
    for prev, cur in zip("abcdefghij", "bcdefghijk"):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb.write_text("\n".join(lines) + "\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\nfoo: " + "[" * 5000 + "]" * 5000 + "\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("name: n\nfoo: " + "[" * 100 + "]" * 100 + "\n")
    for f, words in ((bomb, "too large or too deep"), (deep, "nested too deeply"),
                     (nested, "too large or too deep")):
        r = hzgen("validate", str(f))
        assert r.returncode == 2, (f, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith(str(f) + ":"), r.stderr


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


def test_validate_checks_every_spec_after_a_bad_one(tmp_path):
    """`validate A BAD C`: C is checked too (it stopped at BAD); exit 2 for the bad one; an
    empty document is named as such (it said "got NoneType")."""
    (tmp_path / "empty.yaml").write_text("---\n...\n")
    r = hzgen("validate", "specs/default.yaml", str(tmp_path / "empty.yaml"), "specs/checked.yaml")
    assert r.returncode == 2
    assert "specs/default.yaml: ok" in r.stdout and "specs/checked.yaml: ok" in r.stdout
    assert "empty.yaml:1:1: a spec is a mapping of keys, got an empty document" in r.stderr


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


def test_a_build_that_stops_half_way_leaves_no_stamp_to_trust(tmp_path, monkeypatch):
    """The two libraries are compiled one after the other; when the second one fails (or the
    build is interrupted) after the first was replaced, no fingerprint is left that says both
    are of the old sources: the next build of the old sources rebuilds (before, it printed
    `built` and kept the first library of the other sources)."""
    from hzgen import build as B
    gen = tmp_path / "gen"
    gen.mkdir()
    out = tmp_path / "out"
    (gen / "hz_static.c").write_text("int version(void) { return 1; }\n")
    B.build("x", gen, out, "x.yaml")
    v1 = (out / "libhz_x.so").read_bytes()
    # sources v2: the override library builds, the prefixed one (no -DHZ_OVERRIDE) does not
    (gen / "hz_static.c").write_text("#ifndef HZ_OVERRIDE\n#error stop\n#endif\n"
                                     "int version(void) { return 2; }\n")
    try:
        B.build("x", gen, out, "x.yaml")
    except B.BuildError:
        pass
    else:
        raise AssertionError("the prefixed build should have failed")
    assert (out / "libhz_x.so").read_bytes() != v1           # replaced by v2's
    (gen / "hz_static.c").write_text("int version(void) { return 1; }\n")
    B.build("x", gen, out, "x.yaml")
    assert (out / "libhz_x.so").read_bytes() == v1           # rebuilt, not skipped


def test_sigterm_during_a_build_leaves_nothing_half_made(tmp_path):
    """`timeout hzgen build ...` (SIGTERM) unwinds like Ctrl-C: no temporary library or
    generated directory is left, and the status says it was terminated (before: the process
    died at once and left empty temporary files behind)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "hzgen.cli", "build", "specs/default.yaml",
                          "--root", str(tmp_path)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    build_dir = tmp_path / "build" / "default"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(build_dir.glob(".libhz_*")):
        time.sleep(0.02)                 # the first library is being compiled
    assert list(build_dir.glob(".libhz_*")), "never saw the compile start"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "hzgen: terminated" in err
    left = [x.name for d in (tmp_path / "build", tmp_path / "generated") for x in d.rglob(".*")]
    assert left == [], left


def test_symlink_loops_are_bad_input(tmp_path):
    """A spec path, or a --root, that is a symlink loop: a message and exit 2 (a RuntimeError
    traceback from Path.resolve() before; `diff` exited 1, which says the specs differ)."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for args in (["validate", str(tmp_path / "a")], ["classes", str(tmp_path / "a")],
                 ["diff", str(tmp_path / "a"), "specs/default.yaml"],
                 ["build", "specs/default.yaml", "--root", str(tmp_path / "a")]):
        r = hzgen(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip(), (args, r.stderr)


def test_validate_names_a_link_loop_like_any_bad_spec_and_goes_on(tmp_path):
    """validate checks every spec after a bad one, a symlink loop too, in FILE:LINE:COL form
    (before: `hzgen: Symlink loop from ...` and the specs after it were never checked), and
    `extends:` through a loop or a dangling link says so (was: no such spec file)."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dang").symlink_to(tmp_path / "nothere")
    (tmp_path / "e.yaml").write_text("name: e\nextends: a\n")
    (tmp_path / "d.yaml").write_text("name: d\nextends: dang\n")
    r = hzgen("validate", str(tmp_path / "a"), "specs/default.yaml", str(tmp_path / "e.yaml"),
              str(tmp_path / "d.yaml"))
    assert r.returncode == 2
    assert r.stdout == "specs/default.yaml: ok (default: 56 classes, 2 tier ranges)\n"
    assert r.stderr.splitlines() == [f"{tmp_path / 'a'}:1:1: cannot read: a symbolic link loop",
                                     f"{tmp_path / 'e.yaml'}:2:10: extends: a symbolic link loop 'a'",
                                     f"{tmp_path / 'd.yaml'}:2:10: extends: a dangling symbolic link 'dang'"]


def test_an_output_that_cannot_be_written_is_refused_before_the_command_runs(tmp_path):
    """`hzgen profile -o` in a directory where no file can be made (/proc) is refused up
    front (before, the command ran and its profile was lost at the end)."""
    marker = tmp_path / "ran"
    r = hzgen("profile", "-o", "/proc/hzgen-test.yaml", "--", "touch", str(marker))
    assert r.returncode == 2 and "cannot create a file in /proc" in r.stderr, r.stderr
    assert not marker.exists()


def test_a_stray_file_where_generated_output_goes_is_replaced(tmp_path):
    """generated/<name> that is a plain file is replaced by the rendered directory, and no
    renamed copy of it is left behind."""
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "default").write_text("stray\n")
    r = hzgen("build", "specs/default.yaml", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "generated" / "default" / "hz_static.c").is_file()
    assert [p.name for p in (tmp_path / "generated").iterdir()] == ["default"]


INTERRUPT_DURING_IMPORT = """
import builtins, os, signal, sys
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == "jinja2" and name not in sys.modules:   # a Ctrl-C while it loads
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
from hzgen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_while_the_modules_load_is_no_traceback(tmp_path):
    """A Ctrl-C in the first fraction of a second, while jinja2 and the other modules are
    imported, is `hzgen: interrupted` and 130 (a KeyboardInterrupt traceback before)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_IMPORT, "build", "specs/default.yaml",
                        "--root", str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 130, r.stderr
    assert "hzgen: interrupted" in r.stderr and "Traceback" not in r.stderr
