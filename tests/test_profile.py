"""`hzgen profile` and `hzgen preload`: record a real program's size classes, tune a spec to
them, build it, run the program on it; bad inputs exit 2 with a message. Everything is built
into temporary directories (the commands run with cwd = tmp_path)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, built_spec, compile_c
from hzgen.pipeline import load_model
from hzgen.preload import ident_from
from hzgen.workload import hot_sizes, tuned_sizes
from hzgen.profile import recording_sizes, recording_spec

# the commands through cli.main, registered here if cli.py does not list them yet
RUNNER = ("import sys; from hzgen import cli; "
          "cli.TOOLS.setdefault('profile', ('hzgen.profile', 'profile')); "
          "cli.TOOLS.setdefault('preload', ('hzgen.preload', 'preload')); "
          "sys.exit(cli.main(sys.argv[1:]))")

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  static char *keep[256];
  unsigned long sum = 0;
  for (int i = 0; i < n; i++) {
    char *a = malloc(40), *b = malloc(700);
    if (!a || !b) return 3;
    memset(a, i, 40); memset(b, i + 1, 700);
    sum += (unsigned char)a[39] + (unsigned char)b[699];
    free(keep[i % 256]); keep[i % 256] = a;          /* keep some live: no malloc/free elision */
    free(keep[(i + 128) % 256]); keep[(i + 128) % 256] = b;
  }
  for (int i = 0; i < 256; i++) free(keep[i]);
  printf("ok %lu\n", sum);
  return 0;
}
"""


def hz(*args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    env.pop("LD_PRELOAD", None)
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("prog")
    (d / "t.c").write_text(PROGRAM)
    subprocess.run([cc, "-O1", "-o", str(d / "t"), str(d / "t.c")], check=True)
    return d / "t"


@pytest.fixture(scope="module")
def profiled(program, tmp_path_factory):
    d = tmp_path_factory.mktemp("profiled")
    r = hz("profile", "-o", "w.yaml", "--", str(program), "20000", cwd=d)
    return d, r


def test_profile_records_hot_classes(profiled, program):
    d, r = profiled
    assert r.returncode == 0, r.stderr
    assert "ok " in r.stdout                        # the program's own stdout passes through
    assert "Traceback" not in r.stderr
    prof = yaml.safe_load((d / "w.yaml").read_text())
    assert prof["hzgen_profile"] == 1
    assert prof["command"] == [str(program), "20000"]
    assert prof["base"] == str((REPO / "specs" / "default.yaml").resolve())
    assert prof["small_max"] == 262144
    by_size = {c["size"]: c for c in prof["classes"]}
    assert by_size[48]["allocs"] >= 20000 and by_size[704]["allocs"] >= 20000
    assert by_size[48]["frees"] >= 20000
    assert all(c["allocs"] > 0 for c in prof["classes"])
    assert prof["totals"]["allocs"] == sum(c["allocs"] for c in prof["classes"])
    assert prof["totals"]["remote_in"] == 0
    assert prof["memory"]["segments_mapped"] >= 1
    # nothing else left in the working directory: the recorder was built in a temp dir
    assert sorted(p.name for p in d.iterdir()) == ["w.yaml"]


def test_preload_builds_tuned_spec_that_runs(profiled, program):
    d, _ = profiled
    r = hz("preload", "--profile", "w.yaml", cwd=d)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("LD_PRELOAD=")
    lib = Path(last.split("=", 1)[1])
    assert lib.is_absolute() and lib.is_file()
    assert lib == (d / "build" / "w_tuned" / "libhz_w_tuned.so").resolve()

    out = d / "w-tuned.yaml"
    text = out.read_text()
    assert text.startswith("# Tuned by `hzgen preload`")
    assert "hot sizes: 48 704" in text
    m = load_model(out)                              # validates
    base = load_model(REPO / "specs" / "default.yaml")
    sizes = [c.size for c in m.classes]
    assert 48 in sizes and 704 in sizes
    assert set(c.size for c in base.classes) <= set(sizes)
    assert sizes == sorted(sizes) and sizes[-1] == m.small_max == base.small_max
    assert m.name == "w_tuned"
    assert m.remote == base.remote                   # no remote frees: strategy kept anyway
    assert yaml.safe_load(text)["extends"] == str((REPO / "specs" / "default.yaml").resolve())
    # over a geometric base only what was added is written (48 is one of its classes already)
    assert yaml.safe_load(text)["size_classes"] == {"extra": [704]}

    env = dict(os.environ, LD_PRELOAD=str(lib))
    run = subprocess.run([str(program), "5000"], capture_output=True, text=True, env=env,
                         timeout=60)
    plain = subprocess.run([str(program), "5000"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == plain.stdout and run.stdout.startswith("ok ")


def test_preload_over_an_explicit_base_writes_the_whole_list(profiled, tmp_path):
    d, _ = profiled
    base_path = REPO / "specs" / "hz3-like.yaml"
    r = hz("preload", "--profile", str(d / "w.yaml"), "--base", str(base_path),
           "-o", str(tmp_path / "h.yaml"), "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sc = yaml.safe_load((tmp_path / "h.yaml").read_text())["size_classes"]
    base = load_model(base_path)
    assert sc["scheme"] == "explicit" and sc["small_max"] == base.small_max
    assert set(c.size for c in base.classes) | {704} <= set(sc["sizes"])


def test_a_spec_fitted_to_the_profile_gets_what_preload_adds(profiled, tmp_path):
    """`scheme: profile` naming the profile gives the table `hzgen preload` writes from it; a
    spec of that scheme serves as the base of preload (an explicit list, the profile key
    cleared) and of the recorder."""
    d, _ = profiled
    fitted = tmp_path / "fitted.yaml"
    fitted.write_text(f"name: fitted\nextends: {REPO / 'specs' / 'default.yaml'}\n"
                      f"size_classes: {{scheme: profile, profile: {d / 'w.yaml'}}}\n")
    r = hz("preload", "--profile", str(d / "w.yaml"), "-o", str(tmp_path / "t.yaml"),
           "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert load_model(fitted).lookup == load_model(tmp_path / "t.yaml").lookup
    r = hz("preload", "--profile", str(d / "w.yaml"), "--base", str(fitted),
           "-o", str(tmp_path / "again.yaml"), "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["size_classes"]["profile"] is None
    extra = tmp_path / "extra.yaml"     # a base with `extra:` (a tuned spec) broke the recorder
    extra.write_text(f"name: extra\nextends: {REPO / 'specs' / 'default.yaml'}\n"
                     "size_classes: {extra: [4368]}\n")
    for base in (fitted, extra):
        rec = tmp_path / "rec.yaml"
        rec.write_text(yaml.safe_dump(recording_spec(base)))
        assert load_model(rec).name == "hzrec"


FORKER = r"""
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void work(size_t size, int n) {
  static char *keep[64];
  for (int i = 0; i < n; i++) {
    free(keep[i % 64]);
    keep[i % 64] = malloc(size);
    memset(keep[i % 64], i, size);
  }
}
int main(void) {
  work(40, 30000);                 /* the parent: 30000 blocks of 48 B */
  pid_t pid = fork();
  if (pid == 0) {
    work(3000, 7000);              /* the child, after the fork: 7000 of 3008 B; exit runs */
    exit(0);                       /* the destructors, so it reports */
  }
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
"""


def test_profile_sums_every_process_of_the_command(program, tmp_path):
    """A shell that runs the program twice, and a program that forks: the profile is the sum
    of every process's report, and a forked child counts only what it did after the fork."""
    (tmp_path / "f.c").write_text(FORKER)
    compile_c(tmp_path / "f.c", tmp_path / "forker")
    r = hz("profile", "-o", "sh.yaml", "--", "sh", "-c",
           f"{program} 20000 && {program} 10000 && {tmp_path / 'forker'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "sh.yaml").read_text()
    prof = yaml.safe_load(text)
    by_size = {c["size"]: c for c in prof["classes"]}
    # both runs of the program, the forker's parent once (not again through its child)
    assert 60000 <= by_size[48]["allocs"] < 61000, by_size[48]
    assert 30000 <= by_size[704]["allocs"] < 31000, by_size[704]
    assert 7000 <= by_size[3008]["allocs"] < 7100, by_size[3008]
    processes = int(text.splitlines()[1].split("reports of ")[1].split()[0])
    assert processes >= 4, text.splitlines()[1]       # sh, the program twice, forker and child
    assert f"{processes} processes" in r.stderr


def test_profile_leaves_out_reports_of_other_allocators(program, tmp_path, build_root):
    """A child that preloads another hzgen library writes a report of that allocator into the
    same directory: left out with a warning, the recorder's reports still make the profile.
    A `%` in the temporary directory's path is not taken for a pattern."""
    other = built_spec(REPO / "specs" / "checked.yaml", build_root).override
    tmpdir = tmp_path / "t%p%%"
    tmpdir.mkdir()
    r = hz("profile", "-o", "o.yaml", "--", "sh", "-c",
           f"{program} 5000 && LD_PRELOAD={other} {program} 3000", cwd=tmp_path,
           env_extra={"TMPDIR": str(tmpdir)})
    assert r.returncode == 0, r.stderr
    assert "a report of checked (per_class), not of the recorder" in r.stderr
    by_size = {c["size"]: c for c in yaml.safe_load((tmp_path / "o.yaml").read_text())["classes"]}
    assert 5000 <= by_size[48]["allocs"] < 5100, by_size[48]     # the first run only
    assert list(tmpdir.iterdir()) == []                            # the recorder's dir is gone


def test_profile_exit_status_passes_through(tmp_path):
    r = hz("profile", "-o", "f.yaml", "--", sys.executable, "-c",
           "x = [bytearray(700) for _ in range(2000)]; raise SystemExit(5)", cwd=tmp_path)
    assert r.returncode == 5, r.stderr
    assert "exited with status 5" in r.stderr
    prof = yaml.safe_load((tmp_path / "f.yaml").read_text())   # still written
    assert any(c["size"] == 704 or c["size"] == 768 for c in prof["classes"])


def test_the_commands_stdout_is_its_own(tmp_path):
    """Nothing of hzgen's on stdout: `hzgen profile -- gzip -c f > f.gz` makes a whole gzip
    file (before: the profile's path was appended as a last line)."""
    r = hz("profile", "-o", "p.yaml", "--", sys.executable, "-c",
           "import sys; x = [bytearray(100) for _ in range(100)]; sys.stdout.write('no newline')",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "no newline"
    assert "hzgen profile: wrote p.yaml" in r.stderr


def test_a_command_with_a_line_break_makes_a_usable_profile(tmp_path):
    """`sh -c 'a\nb'`: the command is one comment line in the profile's and the tuned spec's
    headers (before: its second line fell out of the comment and preload refused the file)."""
    r = hz("profile", "-o", "nl.yaml", "--", "sh", "-c", "ls / >/dev/null\necho two", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "two\n", r.stderr
    text = (tmp_path / "nl.yaml").read_text()
    assert text.splitlines()[0] == "# hzgen profile of: sh -c 'ls / >/dev/null?echo two'"
    assert yaml.safe_load(text)["command"] == ["sh", "-c", "ls / >/dev/null\necho two"]
    r = hz("preload", "--profile", "nl.yaml", "--root", "root", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "#   command: sh -c 'ls / >/dev/null?echo two'\n" in (tmp_path / "nl-tuned.yaml").read_text()


def test_a_stray_directory_among_the_reports_is_left_out(tmp_path):
    """A command that makes a directory where a report would go: a warning, the other reports
    still count (before: `Is a directory`, exit 2, no profile)."""
    r = hz("profile", "-o", "p.yaml", "--", sys.executable, "-c",
           "import os; d = os.path.dirname(os.environ['HZ_STATS_FILE']); "
           "os.mkdir(d + '/report.999999999.json'); x = [bytearray(700) for _ in range(500)]",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "leaving out an unreadable report report.999999999.json (Is a directory)" in r.stderr
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["totals"]["allocs"] >= 500


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_a_command_that_drops_privileges_still_reports(tmp_path):
    """A server started as root that setuid()s to nobody writes its report as nobody (before:
    it could not create it in root's 0700 directory, dumped it on its own stderr, and hzgen
    said it found no report)."""
    r = hz("profile", "-o", "p.yaml", "--", sys.executable, "-c",
           "import os; os.setgid(65534); os.setuid(65534); "
           "x = [bytearray(700) for _ in range(3000)]; print(os.getuid())", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "65534\n" and "hz_stats" not in r.stderr, r.stderr
    sizes = {c["size"]: c["allocs"] for c in yaml.safe_load((tmp_path / "p.yaml").read_text())["classes"]}
    assert sizes.get(704, 0) >= 3000, sizes        # 701 B: bytearray's buffer and its NUL


def test_sigterm_leaves_nothing_behind(tmp_path):
    """`timeout hzgen profile -- CMD`: the SIGTERM reaches the command, which is waited for;
    the temporary directory with the recorder goes (before: both were left behind)."""
    import signal
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = tmp_path / "started"
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp))
    env.pop("LD_PRELOAD", None)
    child = (f"import pathlib, time; pathlib.Path({str(marker)!r}).write_text('x'); "
             "time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", RUNNER, "profile", "-o", "t.yaml", "--",
                          sys.executable, "-c", child], cwd=tmp_path, env=env,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), p.stderr.read() if p.poll() is not None else "command never started"
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "exited with status 143" in err and "Traceback" not in err, err
    assert list(tmp.iterdir()) == []                     # no hzprof-* left


@pytest.mark.parametrize("args, msg", [
    (["profile", "--"], "no command given"),
    (["profile"], "no command given"),
    (["profile", "-o", "p.yaml", "--", "no-such-command-hz"], "command not found"),
    (["profile", "-o", "p.yaml", "--", "./good.yaml"], "./good.yaml: cannot run: not executable"),
    (["profile", "-o", "p.yaml", "--", "./sub"], "./sub: cannot run: a directory"),
    (["preload", "--profile", "cmdnum.yaml"], "cmdnum.yaml:2:10: `command` must be a list of strings"),
    (["preload", "--profile", "truth.yaml"], "not an hzgen profile"),
    (["preload", "--profile", "twice.yaml"], "classes[1].size: 48 is classes[0].size too"),
    (["profile", "-o", "p.yaml", "--", "./badshebang"],
     "./badshebang: cannot run: its #! interpreter '/no/such/interp': No such file or directory"),
    (["profile", "-o", "p.yaml", "--", "./crlf"],
     "./crlf: cannot run: its #! interpreter '/bin/sh\\r' (a CRLF line ending?): No such file"),
    (["profile", "--base", "nope.yaml", "--", "true"], "--base nope.yaml: no such spec file"),
    (["profile", "-o", "nodir/p.yaml", "--", "true"], "no such directory"),
    (["preload", "--profile", "missing.yaml"], "missing.yaml:1:1: no such profile file"),
    (["preload", "--profile", "syntax.yaml"], "syntax.yaml:2:1: YAML syntax error"),
    (["preload", "--profile", "other.yaml"], "not an hzgen profile"),
    (["preload", "--profile", "badcount.yaml"], "classes[0].allocs: expected a count"),
    (["preload", "--profile", "good.yaml", "--base", "nope.yaml"], "no such spec file"),
    (["preload", "--profile", "gonebase.yaml"], "base spec '/nowhere/mine.yaml' is gone"),
    (["preload", "--profile", "good.yaml", "--base", "base.yaml", "-o", "base.yaml"],
     "would overwrite the base spec"),
    (["preload", "--profile", "good.yaml", "--base", "base.yaml", "-o", "parent.yaml"],
     "would overwrite the base spec or a spec it extends"),
    (["preload", "--profile", "good.yaml", "--base", "base.yaml", "-o", "sub"], "is a directory"),
    (["profile", "-o", "sub", "--", "true"], "is a directory"),
    (["preload", "--profile", "good.yaml", "--base", "base.yaml", "--root", "good.yaml"],
     "not a directory"),
])
def test_bad_input_exits_2(tmp_path, args, msg):
    (tmp_path / "parent.yaml").write_text((REPO / "specs" / "single-thread.yaml").read_text()
                                          .replace("extends: default.yaml",
                                                   f"extends: {REPO / 'specs' / 'default.yaml'}"))
    (tmp_path / "base.yaml").write_text("name: mine\nextends: parent.yaml\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "gonebase.yaml").write_text("hzgen_profile: 1\nbase: /nowhere/mine.yaml\nclasses: []\n")
    (tmp_path / "syntax.yaml").write_text("hzgen_profile: [1\n")
    (tmp_path / "other.yaml").write_text("name: default\n")
    (tmp_path / "badcount.yaml").write_text(
        "hzgen_profile: 1\nclasses: [{size: 48, allocs: -1, frees: 0, remote_in: 0, remote_out: 0}]\n")
    (tmp_path / "good.yaml").write_text("hzgen_profile: 1\nclasses: []\n")
    (tmp_path / "cmdnum.yaml").write_text("hzgen_profile: 1\ncommand: 5\nclasses: []\n")
    (tmp_path / "truth.yaml").write_text("hzgen_profile: true\nclasses: []\n")
    row = "{size: 48, allocs: 1, frees: 0, remote_in: 0, remote_out: 0}"
    (tmp_path / "twice.yaml").write_text(f"hzgen_profile: 1\nclasses: [{row}, {row}]\n")
    (tmp_path / "badshebang").write_text("#!/no/such/interp -x\necho hi\n")
    (tmp_path / "badshebang").chmod(0o755)
    (tmp_path / "crlf").write_bytes(b"#!/bin/sh\r\necho hi\r\n")
    (tmp_path / "crlf").chmod(0o755)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = hz(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert msg in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before      # nothing half-written
    assert (tmp_path / "base.yaml").read_text() == "name: mine\nextends: parent.yaml\n"


def test_an_empty_profile_keeps_the_base_classes_and_says_so(tmp_path):
    (tmp_path / "none.yaml").write_text("hzgen_profile: 1\ncommand: [./daemon]\nclasses: []\n")
    r = hz("preload", "--profile", "none.yaml", "--root", "root", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the profile records no small allocations: none-tuned.yaml gets the base's classes" in r.stderr
    m = load_model(tmp_path / "none-tuned.yaml")
    assert [c.size for c in m.classes] == [c.size for c in load_model(REPO / "specs" / "default.yaml").classes]


def test_recording_sizes():
    base = load_model(REPO / "specs" / "default.yaml")
    sizes = recording_sizes(base.quantum, base.small_max, [c.size for c in base.classes])
    assert len(sizes) <= 255 and sizes == sorted(set(sizes))
    assert sizes[:3] == [16, 32, 48] and 1024 in sizes and 1088 in sizes and 8192 in sizes
    assert 1040 not in sizes                       # 64-byte steps above 1 KiB
    assert [s for s in sizes if s > 8192] == [c.size for c in base.classes if c.size > 8192]
    assert recording_sizes(16, 512, [512])[-1] == 512


def test_tuning_rules():
    classes = [{"size": 48, "allocs": 990}, {"size": 704, "allocs": 5}, {"size": 720, "allocs": 5}]
    assert hot_sizes(classes) == [(48, 990)]       # 5/1000 is below 1%
    sizes, added, skipped = tuned_sizes([16, 32, 64, 256], [(48, 9), (32, 5), (1000, 1)], 16, 256)
    assert sizes == [16, 32, 48, 64, 256] and added == [48] and skipped == [1000]
    # below the base's smallest class (its first tier range starts there): skipped, not added
    sizes, added, skipped = tuned_sizes([32, 64, 256], [(16, 9), (48, 5)], 16, 256)
    assert sizes == [32, 48, 64, 256] and added == [48] and skipped == [16]
    assert ident_from("hzgen-profile-tuned") == "hzgen_profile_tuned"
    assert ident_from("9-Lives!") == "lives" and ident_from("---") == "tuned"


def test_the_recorder_of_a_deeply_placed_base_validates(tmp_path):
    """The recorder spec names its base in its description; a base path of more than 200
    characters (a deep checkout) must still give a valid description (before: every
    `hzgen profile` there failed on the recorder's own spec)."""
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    base = deep / "base.yaml"
    base.write_text((REPO / "specs" / "default.yaml").read_text())
    spec = recording_spec(base)
    assert len(spec["description"]) <= 200 and spec["description"].isprintable()
    rec = tmp_path / "rec.yaml"
    rec.write_text(yaml.safe_dump(spec))
    assert load_model(rec).name == spec["name"]


def test_profile_output_through_a_symlink_replaces_the_link(tmp_path):
    """`-o` is replaced by a rename: a symbolic link there (even one to a missing directory) is
    replaced, as the write does, and not refused by a check that followed it."""
    (tmp_path / "out.yaml").symlink_to(tmp_path / "nodir" / "x.yaml")
    r = hz("profile", "-o", "out.yaml", "--", "true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.yaml"
    assert out.is_file() and not out.is_symlink() and "hzgen_profile" in out.read_text()
