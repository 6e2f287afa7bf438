"""`hzgen profile [-o FILE] [--base SPEC] -- CMD...`: run CMD under a recording allocator and
write a workload profile (YAML) that `hzgen preload --profile FILE` tunes a spec to.

The recording allocator is a spec derived in memory from the base (default: specs/default.yaml
of the hzgen checkout): the same allocator (`extends:` the base's absolute path) with
  - fine-grained explicit size classes: 16-byte steps up to 1 KiB, 64-byte steps up to 8 KiB,
    then the base's own classes above 8 KiB, ending at the base's small_max (at most 255);
  - one tier range over all of them (`chain: [sll, superslab]`);
  - `stats: {level: per_class}`, `name: hzrec`.
It is written and built in a temporary directory (never into the repository or the working
directory) and removed afterwards.

CMD runs with LD_PRELOAD=<recording library>, HZ_STATS=json and
HZ_STATS_FILE=<temporary directory>/report.%p.json; its stdout, stderr and stdin are its own.
Every process of the command tree that loads the library and exits normally (CMD, a shell and
what it runs, forked children: a forked child counts only what it does after the fork) writes a
report of its own (a reused pid gets a file of its own too), and the profile is their sum: the
workload that a library preloaded the same way would serve. Processes that end in _exit or a
signal write none; one that outlives CMD writes its report to its own stderr (the directory is
gone by then). A report that cannot be read (a process killed while writing it) or that another
allocator wrote is left out with a warning. Run as root, the directory lets other users create
reports in it (a server that drops its privileges after it started).

The profile (YAML):
  hzgen_profile: 1
  command: [CMD...]
  base: /abs/path/of/base.yaml
  small_max: N                   # the base's large-object threshold
  classes: [{size, allocs, frees, remote_in, remote_out}, ...]   # recording classes with allocs > 0
  totals: {allocs, frees, remote_in, remote_out}
  memory: {segments_mapped, ..., bytes_purged}                  # the report's memory counters
Large objects (> small_max) have no class and are not counted in `classes`.

Exit status: CMD's own when it failed (after still writing the profile if a report exists;
killed by signal N: 128+N), 0 on success, 2 on bad input (no CMD, CMD not found, no report,
a base spec that is missing or invalid), 1 when the recording library fails to build.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import hzgen
from .spec import description_line, explicit_table, load_spec
from .tool import ToolError, check_output, guarded, one_line, write_atomic
from .workload import MAX_CLASSES

DEFAULT_BASE = Path(hzgen.__file__).resolve().parent.parent / "specs" / "default.yaml"
DEFAULT_OUT = "hzgen-profile.yaml"
FINE_16_UNTIL = 1024
FINE_64_UNTIL = 8192
RECORDER_NAME = "hzrec"
REC_SLL = {"capacity": 256, "refill_batch": 32, "drain_batch": 128, "max_bytes": "1MiB"}


def base_path(arg: str | None) -> Path:
    """The base spec as an absolute path; a clear ToolError when it is absent."""
    p = Path(arg) if arg else DEFAULT_BASE
    if not p.is_file():
        if arg:
            raise ToolError(f"--base {arg}: no such spec file")
        raise ToolError(f"no base spec: {DEFAULT_BASE} is absent (pass --base SPEC)")
    return p.resolve()


def base_model(base: Path):
    """The resolved model of the base spec (SpecError propagates: FILE:LINE:COL messages)."""
    from .model import resolve
    return resolve(load_spec(base))


def recording_sizes(quantum: int, small_max: int, base_sizes: list[int]) -> list[int]:
    """Fine classes (16-byte steps to 1 KiB, 64-byte steps to 8 KiB; never finer than the
    quantum), then the base's classes above 8 KiB, ending at small_max."""
    s16, s64 = max(16, quantum), max(64, quantum)
    fine = list(range(s16, min(FINE_16_UNTIL, small_max) + 1, s16))
    start = (fine[-1] if fine else 0)
    fine += list(range(start + s64 - start % s64, min(FINE_64_UNTIL, small_max) + 1, s64))
    top = fine[-1] if fine else 0
    sizes = fine + [s for s in base_sizes if s > top]
    if sizes[-1] != small_max:
        sizes.append(small_max)
    if len(sizes) > MAX_CLASSES:
        raise ToolError(f"the recording spec would have {len(sizes)} classes (at most "
                        f"{MAX_CLASSES}); use a base with fewer classes above 8 KiB")
    return sizes


def recording_spec(base: Path) -> dict:
    """The recording allocator's spec (a dict to write as YAML next to nothing: `extends` is
    absolute)."""
    m = base_model(base)
    sizes = recording_sizes(m.quantum, m.small_max, [c.size for c in m.classes])
    return {
        "name": RECORDER_NAME,
        "extends": str(base),
        "description": description_line(f"hzgen profile recorder derived from {base}"),
        "size_classes": explicit_table(sizes, m.small_max),
        "tiers": [{"range": [sizes[0], m.small_max], "chain": ["sll", "superslab"],
                   "sll": dict(REC_SLL)}],
        "stats": {"level": "per_class"},
    }


def profile_from_report(rep, command: list[str], base: Path, small_max: int) -> dict:
    """The profile document from a merged statsview.Report (level per_class)."""
    classes = []
    for cls, row in rep.rows.items():
        if cls == "all" or not row["alloc"]:
            continue
        classes.append({"size": row["size"], "allocs": row["alloc"], "frees": row["free"],
                        "remote_in": row["remote_in"], "remote_out": row["remote_out"]})
    classes.sort(key=lambda c: c["size"])
    totals = {k: sum(c[k] for c in classes) for k in ("allocs", "frees", "remote_in", "remote_out")}
    return {"hzgen_profile": 1, "command": list(command), "base": str(base),
            "small_max": small_max, "classes": classes, "totals": totals,
            "memory": dict(rep.memory)}


def read_reports(paths: list[Path]) -> list:
    """The recorder's reports in these files (one per process; each file is removed once
    read). Left out with a warning: a file that does not parse (its process was killed while
    writing it) and reports of another allocator (a process that preloads or dlopens an
    hzgen library of its own with stats)."""
    from .statsview import parse

    out = []
    for path in paths:
        try:
            reports = parse(path.read_text(errors="replace"), source=path.name)
        except (ToolError, OSError) as e:   # OSError: the command made a directory of that name
            why = e.strerror if isinstance(e, OSError) and e.strerror else e
            print(f"hzgen profile: leaving out an unreadable report {path.name} ({why})",
                  file=sys.stderr)
            reports = []
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        for rep in reports:
            if (rep.allocator, rep.level) == (RECORDER_NAME, "per_class"):
                out.append(rep)
            else:
                print(f"hzgen profile: leaving out {path.name}: a report of {rep.allocator} "
                      f"({rep.level}), not of the recorder", file=sys.stderr)
    return out


@contextlib.contextmanager
def _on_sigterm(handler):
    """handler(signum, frame) runs on SIGTERM while the block runs; the previous one after"""
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_forwarding_sigterm(cmd: list[str], env: dict) -> int:
    """Run cmd; a SIGTERM to hzgen (`timeout hzgen profile ...`) goes on to the command, which
    is waited for, so that the temporary directory is removed and no process is left behind."""
    child = subprocess.Popen(cmd, env=env)
    with _on_sigterm(lambda signum, frame: child.send_signal(signum)):
        return child.wait()


def _cannot_run(name: str, exe: str, e: OSError) -> str:
    """Why exec failed. ENOENT for a file that is there means its #! interpreter is missing,
    which the bare "No such file or directory" hides."""
    why = e.strerror or str(e)
    if e.errno == errno.ENOENT and os.path.isfile(exe):
        try:
            with open(exe, "rb") as f:
                first = f.readline(256)
        except OSError:
            first = b""
        if first.startswith(b"#!"):
            # as the kernel reads it: up to the newline, split at spaces and tabs only (so a
            # CRLF script's interpreter ends in \r, the usual cause of this error)
            line = first[2:].split(b"\n", 1)[0].strip(b" \t")
            shown = line.replace(b"\t", b" ").split(b" ", 1)[0].decode(errors="replace")
            hint = " (a CRLF line ending?)" if shown.endswith("\r") else ""
            return f"{name}: cannot run: its #! interpreter {shown!r}{hint}: {why}"
    return f"{name}: cannot run: {why}"


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default=DEFAULT_OUT, metavar="FILE",
                   help=f"where to write the profile (default: {DEFAULT_OUT})")
    p.add_argument("--base", default=None, metavar="SPEC",
                   help="the spec the recorder is derived from (default: specs/default.yaml "
                        "of the hzgen checkout)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...",
                   help="the command to run and profile")


@guarded("profile")
def run(args) -> int:
    """A SIGTERM (`timeout hzgen profile ...`) ends hzgen like Ctrl-C does: its temporary
    directory goes, and a running command is passed the signal and waited for."""
    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    with _on_sigterm(terminate):
        return _profile(args)


def _profile(args) -> int:
    from .pipeline import build_spec
    from .statsview import merge

    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise ToolError("no command given (usage: hzgen profile [-o FILE] -- CMD...)")
    exe = shutil.which(cmd[0])
    if exe is None:
        if os.sep in cmd[0] and os.path.isdir(cmd[0]):
            raise ToolError(f"{cmd[0]}: cannot run: a directory")
        if os.sep in cmd[0] and os.path.exists(cmd[0]):
            raise ToolError(f"{cmd[0]}: cannot run: not executable (chmod +x?)")
        raise ToolError(f"{cmd[0]}: command not found")
    out = Path(args.output)
    check_output("-o", out)   # found out now, not after the command ran
    base = base_path(args.base)

    with tempfile.TemporaryDirectory(prefix="hzprof-") as td:
        tmp = Path(td)
        rec = recording_spec(base)
        spec_file = tmp / "hzrec.yaml"
        spec_file.write_text("# hzgen profile: recording allocator\n"
                             + yaml.safe_dump(rec, sort_keys=False))
        print(f"hzgen profile: building the recorder ({len(rec['size_classes']['sizes'])} "
              f"classes) from {base}", file=sys.stderr)
        built = build_spec(spec_file, root=tmp / "root")
        reports = tmp / "reports"
        reports.mkdir()
        if os.geteuid() == 0:
            # a server started as root that drops its privileges (setuid) writes its report
            # as another user: it may pass through the directory and create files in reports/
            # (not list it; sticky: nobody removes another's file)
            os.chmod(tmp, 0o711)
            os.chmod(reports, 0o1733)
        env = dict(os.environ)
        env["LD_PRELOAD"] = str(built.override)
        env["HZ_STATS"] = "json"
        env["HZ_STATS_FILE"] = str(reports).replace("%", "%%") + "/report.%p.json"
        print(f"hzgen profile: running {one_line(shlex.join(cmd))}", file=sys.stderr)
        try:
            rc = _run_forwarding_sigterm(cmd, env)
        except OSError as e:
            raise ToolError(_cannot_run(cmd[0], exe, e))
        status = _exit_code(rc)
        if rc:
            print(f"hzgen profile: {cmd[0]} exited with status {status}", file=sys.stderr)
        found = read_reports(sorted(reports.glob("report.*.json")))
        if not found:
            print(f"hzgen profile: no stats report from {cmd[0]} (did it load the library? "
                  "static and setuid programs ignore LD_PRELOAD; a crash writes none)",
                  file=sys.stderr)
            return status or 2
        rep = merge(found)   # the recorder's per_class reports only (read_reports)
        prof = profile_from_report(rep, cmd, base, rec["size_classes"]["small_max"])

    processes = f"{rep.count} process" + ("es" if rep.count != 1 else "")
    head = (f"# hzgen profile of: {one_line(shlex.join(cmd))}\n"
            f"# {prof['totals']['allocs']} small allocations in {len(prof['classes'])} "
            f"recording classes; the sum of the reports of {processes}\n")
    write_atomic(out, head + yaml.safe_dump(prof, sort_keys=False, default_flow_style=None, width=100))
    # stderr only: CMD's stdout is its own (`hzgen profile -- ./app > out.bin`)
    print(f"hzgen profile: wrote {out} ({prof['totals']['allocs']} allocations, "
          f"{len(prof['classes'])} classes, {processes})", file=sys.stderr)
    return status
