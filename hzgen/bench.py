"""``hzgen bench``: run the allocator benchmark suite.

Compiles the C workloads in ``bench/`` (into ``build/bench/``), builds the
given specs into LD_PRELOAD libraries, and runs every workload variant under
every allocator (the specs plus peer allocators: glibc, mimalloc, jemalloc,
tcmalloc), alternating allocators run by run in rounds whose order is balanced
(every allocator in every position, and right after every other one, equally often).
Reports the
median ops/s, the median of the paired ratios to a baseline allocator, peak
RSS, and instructions per malloc+free pair for the ``tiny`` workloads,
counted by ``perf stat`` where the hardware counters are available and
otherwise by valgrind's callgrind (a simulated, deterministic count).

Entry points for the CLI: :func:`add_arguments` and :func:`run`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .tool import ToolError, brief, check_output_file, publish, read_regular, write_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
BUILD_DIR = REPO_ROOT / "build" / "bench"
DEFAULT_SPEC = REPO_ROOT / "specs" / "default.yaml"
TIME_TOOL = "/usr/bin/time"
CFLAGS = ["-O2", "-pthread"]

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class BenchError(Exception):
    """An error reported to the user as one line on stderr (no traceback)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# Workloads


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "tiny16"
    program: str  # executable built from bench/<program>.c
    args: tuple[str, ...] = ()
    pair_factor: int = 1  # runs per allocator = pairs * pair_factor
    spread: bool = False  # report min..max of the paired ratio in the table
    instructions: bool = False  # count instructions per malloc+free pair
    real: bool = False  # a real program (bench/realprog.c): only when asked for (`real`)
    needs: tuple[str, ...] = ()  # programs it runs that may be missing, and
    package: str = ""  # the Debian packages that provide them


VARIANTS: tuple[Variant, ...] = (
    Variant("tiny16", "tiny", ("-z", "16"), instructions=True),
    Variant("tiny32", "tiny", ("-z", "32"), instructions=True),
    Variant("tiny64", "tiny", ("-z", "64"), instructions=True),
    Variant("tiny256", "tiny", ("-z", "256"), instructions=True),
    # the closest peer within ~10% and the runs spreading wider than that (so is churn, and
    # footprint is page-fault bound): twice the runs, to narrow the interval
    Variant("mixed", "mixed", pair_factor=2),
    Variant("larson1", "larson", ("-t", "1"), pair_factor=2),
    # threaded, short and scheduler-bound on 2 cores (so is scratch2): twice the runs, and
    # their spread shown
    Variant("larson2", "larson", ("-t", "2"), pair_factor=2, spread=True),
    Variant("larson4", "larson", ("-t", "4"), pair_factor=2, spread=True),
    Variant("prodcons2", "prodcons", ("-t", "2"), pair_factor=2, spread=True),
    Variant("prodcons4", "prodcons", ("-t", "4"), pair_factor=2, spread=True),
    Variant("midsize2", "midsize", ("-t", "2")),
    Variant("realloc", "realloc"),
    Variant("scratch2", "scratch", ("-t", "2"), pair_factor=2, spread=True),
    Variant("churn", "churn", pair_factor=2),
    Variant("footprint", "footprint", pair_factor=2),
    # real programs on the allocator under test: python3, its sqlite3, cc (and its cc1/as),
    # redis-server (loaded by redis-benchmark, which is not on the allocator)
    Variant("py", "realprog", ("-p", "py"), real=True),
    Variant("sqlite", "realprog", ("-p", "sqlite"), real=True),
    Variant("cc", "realprog", ("-p", "cc"), real=True),
    Variant("redis", "realprog", ("-p", "redis"), real=True,
            needs=("redis-server", "redis-benchmark"), package="redis-server redis-tools"),
)
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}
SUITE = tuple(v for v in VARIANTS if not v.real)   # what runs when no workload is named

# Pairs per instruction measurement run: N and 2N (multiples of 128).
INSTR_PAIRS = 262144


def select_variants(spec: Optional[str]) -> list[Variant]:
    """Variants named in a comma list; a program name (``tiny``, ``larson``)
    selects all of its variants, ``real`` the real programs, ``all`` everything.
    None or empty selects the synthetic suite (SUITE)."""
    if spec is None or not spec.strip():
        return list(SUITE)
    chosen: list[Variant] = []
    for raw in spec.split(","):
        name = raw.strip()
        if not name:
            continue
        if name in ("all", "*"):
            matches = list(VARIANTS)
        elif name == "real":
            matches = [v for v in VARIANTS if v.real]
        elif name in VARIANT_BY_NAME:
            matches = [VARIANT_BY_NAME[name]]
        else:
            matches = [v for v in VARIANTS if v.program == name]
        if not matches:
            known = ", ".join(v.name for v in VARIANTS)
            raise BenchError(f"unknown workload {name!r} (known: {known})")
        for v in matches:
            if v not in chosen:
                chosen.append(v)
    if not chosen:
        raise BenchError("no workloads selected")
    return chosen


# --------------------------------------------------------------------------
# Allocators


@dataclass
class Allocator:
    name: str
    kind: str  # "spec" or "peer"
    preload: Optional[Path]  # None: no LD_PRELOAD (the C library's malloc)
    source: Optional[str] = None  # spec file, for specs

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "preload": str(self.preload) if self.preload else None,
            "source": self.source,
        }


PEER_LIBS: dict[str, tuple[str, ...]] = {
    "glibc": (),
    "mimalloc": ("libmimalloc.so.2", "libmimalloc.so"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so.4"),
}
PEER_PACKAGES = {
    "mimalloc": "libmimalloc2.0",
    "jemalloc": "libjemalloc2",
    "tcmalloc": "libtcmalloc-minimal4",
}
DEFAULT_PEERS = "glibc,mimalloc,jemalloc,tcmalloc"


def multiarch() -> str:
    """The Debian multiarch triplet of this machine (e.g. x86_64-linux-gnu)."""
    import sysconfig

    ma = sysconfig.get_config_var("MULTIARCH")
    if ma:
        return str(ma)
    for cmd in (["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], ["gcc", "-print-multiarch"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out:
            return out
    machine = platform.machine()
    return {"arm64": "aarch64"}.get(machine, machine) + "-linux-gnu"


def lib_dirs() -> list[Path]:
    ma = multiarch()
    dirs = [f"/usr/lib/{ma}", f"/lib/{ma}", f"/usr/local/lib/{ma}", "/usr/local/lib",
            "/usr/lib64", "/lib64", "/usr/lib", "/lib"]
    return [Path(d) for d in dirs]


def find_peer(name: str) -> Optional[Path]:
    for d in lib_dirs():
        for lib in PEER_LIBS[name]:
            p = d / lib
            if p.exists():
                return p.resolve()
    return None


def runnable_variants(variants: list[Variant]) -> list[Variant]:
    """The variants whose programs are installed; the others are skipped with a note
    saying how to get them (like a missing peer)."""
    out = []
    for v in variants:
        missing = [p for p in v.needs if shutil.which(p) is None]
        if missing:
            print(f"hzgen bench: {v.name} needs {', '.join(missing)}, which is not installed; "
                  f"skipping it (install it with: apt-get install {v.package})", file=sys.stderr)
        else:
            out.append(v)
    if not out:
        raise BenchError("none of the selected workloads can run here")
    return out


def parse_peer_list(spec: Optional[str]) -> list[str]:
    if spec is None:
        spec = DEFAULT_PEERS
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names in (["none"], ["-"]):
        return []
    out: list[str] = []
    for n in names:
        if n not in PEER_LIBS:
            raise BenchError(f"unknown peer {n!r} (known: {', '.join(PEER_LIBS)}, or 'none')")
        if n not in out:
            out.append(n)
    return out


def resolve_peers(names: list[str]) -> list[Allocator]:
    peers = []
    for n in names:
        if n == "glibc":
            peers.append(Allocator("glibc", "peer", None))
            continue
        path = find_peer(n)
        if path is None:
            print(f"hzgen bench: {n} not found in {', '.join(str(d) for d in lib_dirs()[:2])}; "
                  f"skipping it (install it with: apt-get install {PEER_PACKAGES[n]})",
                  file=sys.stderr)
            continue
        peers.append(Allocator(n, "peer", path))
    return peers


def load_build_spec() -> Callable[[Any], Any]:
    try:
        from hzgen.pipeline import build_spec  # type: ignore
    except ImportError as e:
        raise BenchError(f"cannot build specs: hzgen.pipeline is not available ({e})", EXIT_FAIL)
    return build_spec


def build_specs(paths: list[Path], build_spec: Callable[[Any], Any], taken: set[str]) -> list[Allocator]:
    out = []
    for path in paths:
        try:
            built = build_spec(path)
        except BenchError:
            raise
        except Exception as e:  # report any build failure as one clear line
            raise BenchError(f"building spec {path} failed: {type(e).__name__}: {e}", EXIT_FAIL)
        name = str(getattr(built, "name", None) or path.stem)
        override = getattr(built, "override", None)
        preload = None
        if override is not None:
            preload = Path(override).resolve()
            if not preload.exists():
                raise BenchError(f"spec {path}: built library {preload} does not exist", EXIT_FAIL)
        unique, k = name, 2
        while unique in taken:
            unique = f"{name}#{k}"
            k += 1
        taken.add(unique)
        out.append(Allocator(unique, "spec", preload, str(path)))
    return out


# --------------------------------------------------------------------------
# Building the workloads


def compile_workloads(programs: list[str], bench_dir: Optional[Path] = None,
                      build_dir: Optional[Path] = None) -> dict[str, Path]:
    """Compile bench/<program>.c to build/bench/<program> where the source
    (or a header in bench/) is newer than the binary."""
    bench_dir = BENCH_DIR if bench_dir is None else bench_dir
    build_dir = BUILD_DIR if build_dir is None else build_dir
    if not bench_dir.is_dir():
        raise BenchError(f"benchmark sources not found: {bench_dir} is missing "
                         "(hzgen bench must run from a checkout of the hzgen repository)", EXIT_FAIL)
    cc = shutil.which("cc")
    if cc is None:
        raise BenchError("no C compiler: 'cc' is not on PATH (apt-get install gcc)", EXIT_FAIL)
    build_dir.mkdir(parents=True, exist_ok=True)
    headers = list(bench_dir.glob("*.h"))
    newest_header = max((h.stat().st_mtime for h in headers), default=0.0)
    env = _clean_env()
    exes = {}
    for prog in programs:
        src = bench_dir / f"{prog}.c"
        if not src.exists():
            raise BenchError(f"benchmark source missing: {src}", EXIT_FAIL)
        exe = build_dir / prog
        newest = max(src.stat().st_mtime, newest_header)
        if not exe.exists() or exe.stat().st_mtime < newest:
            tmp = build_dir / f".{prog}.tmp{os.getpid()}"
            cmd = [cc, *CFLAGS, "-o", str(tmp), str(src)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise BenchError(f"compiling {src} failed:\n{res.stderr.strip()}", EXIT_FAIL)
            os.replace(tmp, exe)
        exes[prog] = exe
    return exes


# --------------------------------------------------------------------------
# Running


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


def _env_tool() -> str:
    return shutil.which("env") or "/usr/bin/env"


def workload_command(exe: Path, variant: Variant, alloc: Allocator, scale: float,
                     extra: tuple[str, ...] = ()) -> list[str]:
    """Command line of one run.  LD_PRELOAD is given to the workload only
    (through env(1)), never to the driver or the measuring tools."""
    cmd = [str(exe), *variant.args, *extra, "-s", repr(float(scale))]
    if alloc.preload is not None:
        cmd = [_env_tool(), f"LD_PRELOAD={alloc.preload}", *cmd]
    return cmd


def parse_result(stdout: str) -> Optional[dict[str, Any]]:
    """The fields of the RESULT line, numbers converted; None if absent."""
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            fields: dict[str, Any] = {}
            for tok in line.split()[1:]:
                if "=" not in tok:
                    continue
                k, v = tok.split("=", 1)
                fields[k] = _number(v)
            if isinstance(fields.get("ops_per_sec"), (int, float)):
                return fields
    return None


def _number(v: str) -> Any:
    try:
        return int(v)
    except ValueError:
        pass
    try:
        f = float(v)
        return f if math.isfinite(f) else v
    except ValueError:
        return v


@dataclass
class Proc:
    returncode: int
    stdout: str
    stderr: str
    maxrss_kb: Optional[int]
    timed_out: bool


def spawn(cmd: list[str], timeout: float, env: Optional[dict[str, str]] = None) -> Proc:
    """Run cmd in its own process group, reap it with wait4 (so its peak
    RSS is known), kill the whole group on timeout."""
    env = _clean_env() if env is None else env
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            while True:
                try:
                    _, status, ru = os.wait4(proc.pid, 0)
                    break
                except InterruptedError:
                    continue
        except BaseException:   # Ctrl-C or SIGTERM to hzgen: the workload's group goes too
            kill()
            os.waitpid(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Proc(proc.returncode, out.read().decode(errors="replace"),
                    err.read().decode(errors="replace"), int(ru.ru_maxrss), timed_out.is_set())


def run_sample(exe: Path, variant: Variant, alloc: Allocator, scale: float, timeout: float,
               use_time: bool) -> dict[str, Any]:
    cmd = workload_command(exe, variant, alloc, scale)
    rss_file = None
    if use_time:
        fd, rss_file = tempfile.mkstemp(prefix="hzgen-bench-rss-")
        os.close(fd)
        cmd = [TIME_TOOL, "-f", "%M", "-o", rss_file, *cmd]
    try:
        try:
            p = spawn(cmd, timeout)
        except OSError as e:
            return {"ok": False, "rss_kb": None, "returncode": None,
                    "error": f"cannot run {cmd[0]}: {e}"}
        rss = p.maxrss_kb
        if rss_file is not None:
            try:
                lines = Path(rss_file).read_text().split()
                rss = int(lines[-1]) if lines else None
            except (OSError, ValueError):
                rss = None
    finally:
        if rss_file is not None:
            Path(rss_file).unlink(missing_ok=True)
    sample: dict[str, Any] = {"ok": False, "rss_kb": rss, "returncode": p.returncode}
    res = parse_result(p.stdout)
    if p.timed_out:
        sample["error"] = f"timed out after {timeout:g} s"
    elif p.returncode != 0:
        if p.returncode < 0:
            why = f"killed by signal {-p.returncode}"
        elif use_time and p.returncode > 128:  # time(1) reports a signal as 128+N
            why = f"killed by signal {p.returncode - 128}"
        else:
            why = f"exit status {p.returncode}"
        sample["error"] = f"{why}: {_tail(p.stderr)}"
    elif res is None:
        sample["error"] = f"no RESULT line in output: {_tail(p.stdout + p.stderr)}"
    else:
        sample["ok"] = True
        sample["ops"] = res.get("ops")
        sample["seconds"] = res.get("seconds")
        sample["ops_per_sec"] = float(res["ops_per_sec"])
        sample["fields"] = {k: v for k, v in res.items()
                            if k not in ("name", "ops", "seconds", "ops_per_sec")}
    return sample


def round_order(allocators: list[Allocator], i: int) -> list[Allocator]:
    """Round i's order: a Williams design (a balanced Latin square; for an odd number of
    allocators the square and its mirror). Over every n rounds (2n when n is odd) each
    allocator runs in every position equally often and right after each other one equally
    often, so neither a position's bias (the first run of a round) nor a neighbour's (the run
    after a big process exited) lands on one allocator."""
    n = len(allocators)
    first = [0]                      # 0, 1, n-1, 2, n-2, ...
    lo, hi = 1, n - 1
    while len(first) < n:
        if len(first) % 2:
            first.append(lo)
            lo += 1
        else:
            first.append(hi)
            hi -= 1
    r = i % (n if n % 2 == 0 else 2 * n)
    row = [(x + r) % n for x in first]
    if r >= n:                       # odd n: the second square is the first one mirrored
        row.reverse()
    return [allocators[k] for k in row]


def _tail(text: str, n: int = 300) -> str:
    text = " | ".join(line for line in text.strip().splitlines() if line.strip())
    return text[-n:] if text else "(no output)"


# perf ---------------------------------------------------------------------


def parse_perf_csv(text: str) -> Optional[int]:
    """The instruction count in ``perf stat -x,`` output, or None when perf
    reports it as ``<not supported>`` / ``<not counted>`` or it is absent."""
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) >= 3 and parts[2].split(":")[0] == "instructions":
            try:
                return int(float(parts[0]))
            except ValueError:
                return None
    return None


def _perf_run(cmd: list[str], event: str, timeout: float) -> Optional[tuple[int, Proc]]:
    """Run cmd under ``perf stat``; (instructions, process) or None."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    fd, out = tempfile.mkstemp(prefix="hzgen-bench-perf-")
    os.close(fd)
    try:
        p = spawn([perf, "stat", "-x,", "-e", event, "-o", out, "--", *cmd], timeout)
        if p.returncode != 0 or p.timed_out:
            return None
        n = parse_perf_csv(Path(out).read_text())
        return None if n is None else (n, p)
    except OSError:
        return None
    finally:
        Path(out).unlink(missing_ok=True)


def perf_instructions_event() -> Optional[str]:
    """The perf event that counts instructions here, or None if perf cannot
    (not installed, no PMU in a VM, forbidden by perf_event_paranoid): a
    ``perf stat`` that exits 0 but prints ``<not supported>`` counts as not
    working."""
    true = shutil.which("true") or "/bin/true"
    for event in ("instructions", "instructions:u"):
        r = _perf_run([true], event, 30)
        if r is not None and r[0] > 0:
            return event
    return None


# callgrind ----------------------------------------------------------------
#
# Fallback where perf cannot count (VMs without a virtual PMU): valgrind's
# callgrind counts the instructions the program executes ("Ir") on its
# simulated CPU.  The count is deterministic for the same binary and input
# (to within a few hundred instructions of start-up noise, which the N/2N
# difference cancels), but it is valgrind's CPU: CPUID-dispatched code and
# features valgrind lacks (rseq, for one) may take other paths than on the
# real machine.
#
# The allocator must reach the workload, not valgrind.  valgrind is started
# without LD_PRELOAD; its client is the same ``env LD_PRELOAD=lib exe ...``
# command as in the timed runs, and --trace-children=yes follows env's exec
# into the workload.  Only the process that exits reports a count, so the
# figure is the workload's alone (env's share would cancel in the N/2N
# difference anyway).  valgrind prepends its vgpreload_core to the client's
# LD_PRELOAD; under callgrind that library does not replace malloc.  One
# leak remains: to follow an exec, valgrind re-executes its small launcher
# (valgrind.bin, which only picks the tool and execs it) with the client's
# new environment, so the launcher loads the library too; the tool that
# runs and counts the workload is a static executable and does not.

CALLGRIND_OPTS = ("--tool=callgrind", "--trace-children=yes", "--callgrind-out-file=/dev/null")


def parse_callgrind_collected(text: str) -> Optional[int]:
    """The instruction count in callgrind's ``==PID== Collected : N`` line(s)
    (valgrind's stderr), summed over the traced processes that reported one;
    None if there is none."""
    total, found = 0, False
    for line in text.splitlines():
        if not line.startswith("=="):
            continue
        body = line.split("==", 2)[-1].strip()
        if not body.startswith("Collected"):
            continue
        key, _, value = body.partition(":")
        if key.strip() != "Collected":
            continue
        try:
            total += int(value.split()[0])
            found = True
        except (ValueError, IndexError):
            return None
    return total if found else None


def _callgrind_run(cmd: list[str], timeout: float) -> tuple[Optional[int], Proc | str]:
    """Run cmd under callgrind: (instructions, process), or (None, why)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None, "valgrind is not installed"
    try:
        p = spawn([valgrind, *CALLGRIND_OPTS, *cmd], timeout)
    except OSError as e:
        return None, f"cannot run {valgrind}: {e}"
    if p.timed_out:
        return None, f"timed out after {timeout:g} s"
    if p.returncode != 0:
        return None, f"exit status {p.returncode}: {_tail(p.stderr)}"
    n = parse_callgrind_collected(p.stderr)
    if n is None:
        return None, f"no 'Collected' line from callgrind: {_tail(p.stderr)}"
    return n, p


def callgrind_version() -> Optional[str]:
    """``valgrind-X.Y.Z`` if valgrind's callgrind can count instructions
    here (a trial run of true(1) reports a positive count), else None."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    true = shutil.which("true") or "/bin/true"
    n, _ = _callgrind_run([true], 60)
    if not n or n <= 0:
        return None
    try:
        out = subprocess.run([valgrind, "--version"], capture_output=True, text=True,
                             timeout=30, env=_clean_env()).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "valgrind"


# instructions per pair ----------------------------------------------------


@dataclass(frozen=True)
class InstrCounter:
    """How instructions are counted: ``perf`` (hardware counter ``event``)
    or ``callgrind`` (valgrind ``version``)."""

    method: str  # "perf" or "callgrind"
    event: Optional[str] = None  # perf event
    version: Optional[str] = None  # valgrind version, for callgrind

    def count(self, cmd: list[str], timeout: float) -> tuple[Optional[int], Proc | str]:
        """(instructions, process) of one run of cmd, or (None, why)."""
        if self.method == "perf":
            assert self.event is not None
            r = _perf_run(cmd, self.event, timeout)
            return (None, "perf could not count") if r is None else r
        return _callgrind_run(cmd, timeout)

    def describe(self) -> str:
        if self.method == "perf":
            return f"perf {self.event}"
        return f"callgrind ({self.version or 'valgrind'}, simulated CPU)"


def instruction_counter() -> Optional[InstrCounter]:
    """perf where it can count instructions, else callgrind where valgrind
    is installed and works, else None."""
    event = perf_instructions_event()
    if event:
        return InstrCounter("perf", event=event)
    version = callgrind_version()
    if version:
        return InstrCounter("callgrind", version=version)
    return None


def instructions_per_pair(exe: Path, variant: Variant, alloc: Allocator,
                          counter: InstrCounter | str, pairs: int, timeout: float,
                          errors: Optional[list[str]] = None) -> Optional[float]:
    """(instructions(2N pairs) - instructions(N pairs)) / (ops(2N) - ops(N)):
    start-up and tear-down cost cancel out.  ``counter`` is an InstrCounter
    or a perf event name.  Why a count failed is appended to ``errors``."""
    if isinstance(counter, str):
        counter = InstrCounter("perf", event=counter)
    counts, ops = [], []
    for n in (pairs, 2 * pairs):
        cmd = workload_command(exe, variant, alloc, 1.0, ("-n", str(n)))
        count, proc = counter.count(cmd, timeout)
        if count is None or not isinstance(proc, Proc):
            if errors is not None:
                errors.append(str(proc))
            return None
        r = (count, proc)
        res = parse_result(r[1].stdout)
        if res is None or not isinstance(res.get("ops"), int):
            if errors is not None:
                errors.append(f"no RESULT line in output: {_tail(r[1].stdout + r[1].stderr)}")
            return None
        counts.append(r[0])
        ops.append(res["ops"])
    if ops[1] <= ops[0]:
        return None
    return (counts[1] - counts[0]) / (ops[1] - ops[0])


# progress -----------------------------------------------------------------


class Progress:
    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.last_label = None
        if self.tty:
            try:
                from tqdm import tqdm  # type: ignore

                self.bar = tqdm(total=total, file=sys.stderr, unit="run", leave=False)
            except ImportError:
                self.bar = None

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description(label)
        elif self.tty:
            msg = f"\r[{self.done + 1:>{len(str(self.total))}}/{self.total}] {label}"
            sys.stderr.write(msg.ljust(60))
            sys.stderr.flush()
        else:
            group = label.split()[0]
            if group != self.last_label:
                print(f"hzgen bench: [{self.done + 1}/{self.total}] {group}", file=sys.stderr)
                self.last_label = group

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


# --------------------------------------------------------------------------
# Statistics


CI_LEVEL = 0.95


def _median(xs: list[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def median_ci(xs: list[float], level: float = CI_LEVEL) -> Optional[tuple[float, float, float]]:
    """Distribution-free confidence interval for the median of xs: the k-th smallest and k-th
    largest value, with k as large as the level allows. Each value falls below the true median
    with probability 1/2 (independent runs), so the interval misses it with probability
    2 * P(Binomial(n, 1/2) < k). Returns (lo, hi, coverage), or None when even min..max covers
    less than level (fewer than 6 values for 95%)."""
    n = len(xs)
    best: Optional[tuple[int, float]] = None
    below = 0   # P(Binomial(n, 1/2) <= k - 1) * 2**n
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1)
        coverage = 1.0 - 2.0 * below / 2.0 ** n
        if coverage < level:
            break
        best = (k, coverage)
    if best is None:
        return None
    k, coverage = best
    ordered = sorted(xs)
    return ordered[k - 1], ordered[n - k], coverage


def verdict(ratio_ci: dict[str, Optional[list[float]]], baseline: str) -> dict[str, list[str]]:
    """The baseline against every other allocator, from the confidence intervals of their
    paired ratios (other / baseline): ahead of it when the whole interval is below 1, behind
    when it is above 1, a tie when it holds 1, undecided without an interval."""
    out: dict[str, list[str]] = {"ahead_of": [], "tie_with": [], "behind": [], "undecided": []}
    for a, ci in ratio_ci.items():
        if a == baseline:
            continue
        if ci is None:
            out["undecided"].append(a)
        elif ci[1] < 1.0:
            out["ahead_of"].append(a)
        elif ci[0] > 1.0:
            out["behind"].append(a)
        else:
            out["tie_with"].append(a)
    return out


def summarize(samples: dict[str, list[dict[str, Any]]], baseline: str) -> dict[str, Any]:
    names = list(samples)
    med_ops: dict[str, Optional[float]] = {}
    med_ratio: dict[str, Optional[float]] = {}
    rmin: dict[str, Optional[float]] = {}
    rmax: dict[str, Optional[float]] = {}
    ratio_ci: dict[str, Optional[list[float]]] = {}
    rss: dict[str, Optional[float]] = {}
    fields_med: dict[str, dict[str, float]] = {}
    failures: dict[str, int] = {}
    base = samples.get(baseline, [])
    for a in names:
        ok = [s for s in samples[a] if s["ok"]]
        failures[a] = len(samples[a]) - len(ok)
        med_ops[a] = _median([s["ops_per_sec"] for s in ok])
        ratios = [s["ops_per_sec"] / b["ops_per_sec"]
                  for s, b in zip(samples[a], base)
                  if s["ok"] and b["ok"] and b["ops_per_sec"] > 0]
        med_ratio[a] = _median(ratios)
        ci = median_ci(ratios) if a != baseline else None
        ratio_ci[a] = [ci[0], ci[1]] if ci else None
        if a == baseline:   # its ratios to itself are all 1: show how its own runs spread
            ops = [s["ops_per_sec"] for s in ok]
            ratios = [x / med_ops[a] for x in ops] if ops and med_ops[a] else []
        rmin[a] = min(ratios) if ratios else None
        rmax[a] = max(ratios) if ratios else None
        rss[a] = _median([s["rss_kb"] for s in ok if isinstance(s.get("rss_kb"), int)])
        keys: dict[str, list[float]] = {}
        for s in ok:
            for k, v in s.get("fields", {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    keys.setdefault(k, []).append(v)
        fields_med[a] = {k: statistics.median(v) for k, v in keys.items()}
    return {
        "median_ops_per_sec": med_ops,
        "median_ratio": med_ratio,
        "ratio_min": rmin,
        "ratio_max": rmax,
        "ratio_ci": ratio_ci,
        "verdict": verdict(ratio_ci, baseline),
        "rss_peak_kb": rss,
        "fields_median": fields_med,
        "failures": failures,
    }


def geomean(xs: list[float]) -> Optional[float]:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


# --------------------------------------------------------------------------
# Report


def _fmt_rate(x: Optional[float]) -> str:
    if x is None:
        return "FAIL"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.2f}{suf}"
    return f"{x:.1f}"


def _fmt_kb(kb: Optional[float]) -> str:
    if kb is None:
        return "-"
    return f"{kb / 1024:.1f} MiB"


def _instr_note(meta: dict[str, Any]) -> str:
    """How instr/pair was measured, for the table footer."""
    method = meta.get("instructions_method")
    if method is None and meta.get("perf_event"):  # results written before callgrind
        method = "perf"
    if method == "perf":
        return f"perf {meta['perf_event']}"
    if method == "callgrind":
        what = meta.get("instructions_counter") or "callgrind"
        pairs = meta.get("instr_pairs")
        return what + (f", {pairs} vs {2 * pairs} pairs" if pairs else "")
    return "n/a (neither perf nor valgrind's callgrind can count instructions here)"


def render_table(result: dict[str, Any]) -> str:
    baseline = result["meta"]["baseline"]
    header = ["workload", "allocator", "ops/s", f"vs {baseline}", f"{CI_LEVEL:.0%} CI", "spread",
              "peak RSS", "instr/pair", "notes"]
    rows: list[list[str]] = []
    for wname, w in result["workloads"].items():
        first = True
        for a in result["meta"]["allocator_names"]:
            ops = w["median_ops_per_sec"].get(a)
            ratio = w["median_ratio"].get(a)
            n = len(w["samples"][a])
            fails = w["failures"][a]
            ops_s = _fmt_rate(ops)
            if fails and ops is not None:
                ops_s += f" ({fails}/{n} failed)"
            elif ops is None:
                ops_s = f"FAIL ({fails}/{n})"
            ci = w.get("ratio_ci", {}).get(a)
            ci_s = "" if a == baseline else "n/a" if ci is None else f"{ci[0]:.2f}..{ci[1]:.2f}"
            spread = ""
            if w["spread"] and w["ratio_min"].get(a) is not None:
                spread = f"{w['ratio_min'][a]:.2f}..{w['ratio_max'][a]:.2f}"
            instr = ""
            if w["instructions"]:
                ipp = w["instructions_per_pair"].get(a)
                instr = "n/a" if ipp is None else f"{ipp:.1f}"
            notes = []
            fm = w["fields_median"].get(a, {})
            if "rss_after_free_kb" in fm:
                notes.append(f"after-free {_fmt_kb(fm['rss_after_free_kb'])}")
            if "rss_peak_kb" in fm and wname == "footprint":
                notes.append(f"VmHWM {_fmt_kb(fm['rss_peak_kb'])}")
            rows.append([wname if first else "", a, ops_s,
                         "-" if ratio is None else f"{ratio:.2f}x", ci_s, spread,
                         _fmt_kb(w["rss_peak_kb"].get(a)), instr, ", ".join(notes)])
            first = False
    gm = result.get("geomean_ratio", {})
    rows.append([""] * len(header))
    for a in result["meta"]["allocator_names"]:
        g = gm.get(a)
        rows.append(["geomean" if a == result["meta"]["allocator_names"][0] else "", a, "",
                     "-" if g is None else f"{g:.2f}x", "", "", "", "", ""])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [c.rjust(widths[i]) if i in (2, 3, 4, 5, 6, 7) else c.ljust(widths[i])
                 for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    meta = result["meta"]
    # say only what applies to the workloads in this table
    doubled = [n for n, w in result["workloads"].items() if w["runs"] > meta["pairs"]]
    counted = any(w["instructions"] for w in result["workloads"].values())
    out.append("")
    out.append(f"median of {meta['pairs']} runs per allocator"
               + (f" ({', '.join(doubled)}: {2 * meta['pairs']})" if doubled else "")
               + f"; ratio = median of paired ratios to {baseline}; "
               f"peak RSS from {meta['rss_source']}"
               + (f"; instr/pair: {_instr_note(meta)}" if counted else "")
               + (f"; scale {meta['scale']:g}" if meta["scale"] != 1.0 else "")
               + f"; {CI_LEVEL:.0%} CI: of the median paired ratio (order statistics)")
    out.append("")
    out += render_verdicts(result)
    return "\n".join(out)


def render_verdicts(result: dict[str, Any]) -> list[str]:
    """One line per workload: where the baseline stands against the others, by the confidence
    intervals (a difference inside the run-to-run noise is a tie, not a win)."""
    baseline = result["meta"]["baseline"]
    out = [f"{baseline} against the others ({CI_LEVEL:.0%} CI of the paired ratio "
           f"below 1: ahead; above 1: behind; holding 1: tie):"]
    width = max((len(n) for n in result["workloads"]), default=0)
    for wname, w in result["workloads"].items():
        v = w["verdict"]
        parts = []
        if v["ahead_of"]:
            everyone = not (v["tie_with"] or v["behind"] or v["undecided"])
            parts.append("ahead of " + ("every other" if everyone else ", ".join(v["ahead_of"])))
        for key, label in (("tie_with", "tie with"), ("behind", "behind"),
                           ("undecided", "too few runs for")):
            if v[key]:
                parts.append(f"{label} " + ", ".join(
                    a + ("" if key == "undecided" else
                         " ({0:.2f}..{1:.2f})".format(*w["ratio_ci"][a])) for a in v[key]))
        out.append(f"  {wname.ljust(width)}  {'; '.join(parts) or '-'}")
    return out


def write_plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib, which is not installed "
                         "(pip install matplotlib)", EXIT_FAIL)
    names = result["meta"]["allocator_names"]
    workloads = list(result["workloads"])
    n = max(len(names), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(workloads) + 2), 5))
    for i, a in enumerate(names):
        ys, lo, hi = [], [], []
        for w in workloads:
            wd = result["workloads"][w]
            y = wd["median_ratio"].get(a) or 0.0
            y = y if math.isfinite(y) else 0.0
            ys.append(y)
            # error bar: the confidence interval of the median ratio (none for the baseline)
            ci = wd.get("ratio_ci", {}).get(a) or (y, y)
            ci = ci if all(math.isfinite(c) for c in ci) else (y, y)
            lo.append(max(0.0, y - ci[0]))
            hi.append(max(0.0, ci[1] - y))
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(workloads))]
        ax.bar(xs, ys, width, label=a, yerr=[lo, hi], capsize=2,
               error_kw={"elinewidth": 0.8, "alpha": 0.7})
    ax.axhline(1.0, color="black", linewidth=0.8)
    # Ratios on a log2 axis (2x faster and 2x slower look alike); the limits
    # follow the medians so that one wild whisker does not squash the bars.
    meds = [r for w in result["workloads"].values() for r in w["median_ratio"].values()
            if r is not None and r > 0 and math.isfinite(r)]
    lo_lim = min(meds + [1.0]) / 1.6
    hi_lim = max(meds + [1.0]) * 1.6
    ax.set_yscale("log", base=2)
    ax.set_ylim(lo_lim, hi_lim)
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:g}x"))
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(workloads, rotation=45, ha="right")
    ax.set_ylabel(f"ops/s relative to {result['meta']['baseline']} (median)")
    ax.set_title(f"hzgen bench (higher is better; whiskers: {CI_LEVEL:.0%} confidence "
                 "interval of the median)")
    ax.legend(fontsize="small", ncol=min(n, 5))
    fig.tight_layout()

    try:
        publish(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    except OSError as e:
        raise BenchError(f"cannot write {path}: {e.strerror or 'error'}", EXIT_FAIL)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help=f"allocator spec files to build and measure (default: "
                             f"{DEFAULT_SPEC.relative_to(REPO_ROOT)})")
    parser.add_argument("--peers", default=DEFAULT_PEERS, metavar="LIST",
                        help=f"comma list of peer allocators, or 'none' (default: {DEFAULT_PEERS})")
    parser.add_argument("--workloads", default=None, metavar="LIST",
                        help="comma list of workloads (variant names such as tiny16, larson2, "
                             "program names such as tiny, larson, `real` for the real programs "
                             "(" + ", ".join(v.name for v in VARIANTS if v.real) + "), `all` "
                             "for everything); default: the suite: "
                             + ", ".join(v.name for v in SUITE))
    parser.add_argument("--pairs", type=int, default=6, metavar="N",
                        help="runs per allocator and workload, in rounds that alternate the "
                             "allocators in a balanced order "
                             "(default: 6, the fewest with a 95%% confidence interval; "
                             + ", ".join(v.name for v in VARIANTS if v.pair_factor > 1)
                             + " run 2N)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write raw samples and medians as JSON")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="write a PNG bar chart of the ratios (needs matplotlib)")
    parser.add_argument("--baseline", default=None, metavar="NAME",
                        help="allocator the ratios are relative to (default: the first spec)")
    parser.add_argument("--from", dest="from_json", nargs="+", default=None, metavar="JSON",
                        help="run nothing: report the runs saved by --json in these files "
                             "(several files: their runs pooled, pair by pair) as a table, "
                             "and with --json/--plot write them out again")
    # Hidden: shrink every workload (tests); per-run timeout in seconds.
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, *, build_spec: Optional[Callable[[Any], Any]] = None) -> int:
    """Run the suite; returns the exit code (0 ok, 1 a run or build failed,
    2 bad input).  ``build_spec`` replaces hzgen.pipeline.build_spec."""
    try:
        return _run(args, build_spec)
    except BenchError as e:
        print(f"hzgen bench: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("\nhzgen bench: interrupted", file=sys.stderr)
        return 130


def _output_paths(args: argparse.Namespace) -> tuple[Optional[Path], Optional[Path]]:
    """The files --json and --plot will write, checked before any work (a directory, a
    device, a missing or unwritable directory: exit 2)."""

    out: list[Optional[Path]] = []
    for option in ("json", "plot"):
        name = getattr(args, option, None)
        try:
            out.append(None if name is None else check_output_file(f"--{option}", name))
        except ToolError as e:
            raise BenchError(str(e))
    json_path, plot_path = out
    if json_path is not None and json_path == plot_path:
        raise BenchError(f"--json and --plot name the same file ({args.json})")
    if plot_path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise BenchError("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    return json_path, plot_path


MAX_RESULT = 64 << 20   # a result file of the whole suite at 15 pairs is under 1 MiB


class _Malformed(Exception):
    """What is wrong with a result file (said as `FILE: not a result file ... (WHAT)`)."""


def _read_result(path: Path) -> dict[str, Any]:

    try:
        raw = read_regular(path, MAX_RESULT)
    except ToolError as e:
        raise BenchError(str(e))
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BenchError(f"{path} is not JSON: nested too deeply")
    except json.JSONDecodeError as e:
        raise BenchError(f"{path} is not JSON: {e.msg} (line {e.lineno}, column {e.colno})")
    except UnicodeDecodeError:
        raise BenchError(f"{path} is not JSON: not UTF-8 text")
    except ValueError:      # int(): a number of more than 4300 digits
        raise BenchError(f"{path} is not JSON: a number too long to read")
    try:
        _check_result(data)
    except _Malformed as e:
        raise BenchError(f"{path}: not a result file of hzgen bench --json ({e})")
    return data


def _finite(x) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:   # an int beyond a float
        return False



def _check_result(data: Any) -> None:
    """That data has the structure run() writes (and render_table, write_plot and
    pool_results read): raises _Malformed saying where it does not. The statistics a file
    carries (medians, intervals, geomeans) are not checked: --from computes them again from
    the samples."""
    def need(d: dict, key: str, where: str, ok: Callable[[Any], bool], expected: str) -> Any:
        if key not in d:
            raise _Malformed(f"{where}{key}: missing")
        if not ok(d[key]):
            raise _Malformed(f"{where}{key}: expected {expected}, got {brief(d[key])}")
        return d[key]

    def count(minimum: int) -> Callable[[Any], bool]:
        return lambda v: type(v) is int and v >= minimum

    def optional(d: dict, key: str, where: str, ok: Callable[[Any], bool], expected: str) -> None:
        if key in d and d[key] is not None:
            need(d, key, where, ok, expected)

    if not isinstance(data, dict):
        raise _Malformed(f"the top level is {brief(data)}, not an object")
    need(data, "version", "", lambda v: type(v) is int and v == 1, "1")
    meta = need(data, "meta", "", lambda v: isinstance(v, dict), "an object")
    names = need(meta, "allocator_names", "meta.", lambda v: isinstance(v, list) and v != [],
                 "a list of allocator names")
    for i, a in enumerate(names):
        if not (isinstance(a, str) and a):
            raise _Malformed(f"meta.allocator_names[{i}]: expected a name, got {brief(a)}")
    if len(set(names)) != len(names):
        raise _Malformed(f"meta.allocator_names: {brief(next(a for a in names if names.count(a) > 1))} "
                         "appears twice")
    need(meta, "baseline", "meta.", lambda v: isinstance(v, str) and v in names,
         "one of meta.allocator_names")
    need(meta, "pairs", "meta.", count(1), "a whole number >= 1")
    need(meta, "scale", "meta.", lambda v: _finite(v) and v > 0, "a number > 0")
    need(meta, "rss_source", "meta.", lambda v: isinstance(v, str), "a string")
    for key in ("instructions_method", "instructions_counter", "perf_event"):
        optional(meta, key, "meta.", lambda v: isinstance(v, str), "a string or null")
    if meta.get("instructions_method") == "perf":
        need(meta, "perf_event", "meta.", lambda v: isinstance(v, str), "a string")
    optional(meta, "instr_pairs", "meta.", count(1), "a whole number >= 1 or null")
    if "allocators" in data:
        need(data, "allocators", "", lambda v: isinstance(v, list), "a list")
    workloads = need(data, "workloads", "", lambda v: isinstance(v, dict), "an object")
    for wname, w in workloads.items():
        where = f"workloads.{wname[:40]}"
        if not isinstance(w, dict):
            raise _Malformed(f"{where}: expected an object, got {brief(w)}")
        where += "."
        need(w, "runs", where, count(0), "a whole number >= 0")
        need(w, "spread", where, lambda v: isinstance(v, bool), "true or false")
        need(w, "instructions", where, lambda v: isinstance(v, bool), "true or false")
        w.setdefault("instructions_per_pair", {})
        ipp = need(w, "instructions_per_pair", where, lambda v: isinstance(v, dict), "an object")
        for a, v in ipp.items():
            if not (v is None or (_finite(v) and v >= 0)):
                raise _Malformed(f"{where}instructions_per_pair.{a[:40]}: expected a number "
                                 f">= 0 or null, got {brief(v)}")
        samples = need(w, "samples", where, lambda v: isinstance(v, dict), "an object")
        for a in samples:
            if a not in names:
                raise _Malformed(f"{where}samples: {brief(a)} is not one of meta.allocator_names")
        for a in names:
            runs = need(samples, a, f"{where}samples.", lambda v: isinstance(v, list), "a list")
            for i, x in enumerate(runs):
                at = f"{where}samples.{a}[{i}]"
                if not isinstance(x, dict):
                    raise _Malformed(f"{at}: expected an object, got {brief(x)}")
                at += "."
                if need(x, "ok", at, lambda v: isinstance(v, bool), "true or false"):
                    need(x, "ops_per_sec", at, lambda v: _finite(v) and v >= 0, "a number >= 0")
                optional(x, "rss_kb", at, count(0), "a whole number >= 0 or null")
                fields = x.get("fields", {})
                if not isinstance(fields, dict):
                    raise _Malformed(f"{at}fields: expected an object, got {brief(fields)}")
                for k, v in fields.items():
                    if not (isinstance(v, str) or _finite(v)):
                        raise _Malformed(f"{at}fields.{k[:40]}: expected a number or a string, "
                                         f"got {brief(v)}")
        if len({len(samples[a]) for a in names}) != 1:   # runs alternate allocators
            raise _Malformed(f"{wname[:40]} has unequal numbers of runs per allocator")


def pool_results(paths: list[Path], baseline: Optional[str]) -> dict[str, Any]:
    """The runs of saved results, pooled pair by pair (each file's runs alternate the same
    allocators), summarized again, so tables written before a statistic existed get it too."""
    results = [_read_result(p) for p in paths]
    first = results[0]
    names = first["meta"]["allocator_names"]
    for p, r in zip(paths[1:], results[1:]):
        if r["meta"]["allocator_names"] != names:
            raise BenchError(f"{p} measured {', '.join(r['meta']['allocator_names'])}, "
                             f"{paths[0]} measured {', '.join(names)}: cannot pool them")
        if r["meta"].get("scale") != first["meta"].get("scale"):
            raise BenchError(f"{p} ran at scale {r['meta'].get('scale')}, {paths[0]} at "
                             f"{first['meta'].get('scale')}: cannot pool them")
    # (each file was checked by _read_result: every allocator with as many runs)
    baseline = baseline or first["meta"]["baseline"]
    if baseline not in names:
        raise BenchError(f"unknown baseline {baseline!r}; allocators: {', '.join(names)}")
    workloads: dict[str, Any] = {}
    for r in results:
        for wname, w in r["workloads"].items():
            if wname not in workloads:
                workloads[wname] = {k: v for k, v in w.items() if k != "samples"}
                workloads[wname]["samples"] = {a: [] for a in names}
                workloads[wname]["runs"] = 0
            pooled = workloads[wname]
            pooled["runs"] += w["runs"]
            for a in names:
                pooled["samples"][a] += w["samples"].get(a, [])
            if any(v is not None for v in w.get("instructions_per_pair", {}).values()):
                pooled["instructions_per_pair"] = w["instructions_per_pair"]
    for w in workloads.values():
        w.update(summarize(w["samples"], baseline))
    meta = dict(first["meta"], baseline=baseline,
                pairs=sum(r["meta"]["pairs"] for r in results))
    if len(paths) > 1:
        meta["pooled_from"] = [str(p) for p in paths]
    return {"version": 1, "meta": meta, "allocators": first.get("allocators", []),
            "workloads": workloads, "geomean_ratio": geomean_ratios(workloads, names)}


def geomean_ratios(workloads: dict[str, Any], names: list[str]) -> dict[str, Optional[float]]:
    return {a: geomean([w["median_ratio"][a] for w in workloads.values()
                        if w["median_ratio"].get(a) is not None])
            for a in names}


def report(result: dict[str, Any], json_path: Optional[Path], plot_path: Optional[Path]) -> None:
    """The table on stdout; the JSON and the chart written whole or not at all (through a
    temporary file renamed over the target: a full disk or a file size limit leaves no
    truncated file). The paths were checked by _output_paths."""
    print(render_table(result))
    sys.stdout.flush()
    if json_path is not None:

        try:
            write_atomic(json_path, json.dumps(result, indent=1, sort_keys=False) + "\n")
        except OSError as e:
            raise BenchError(f"cannot write {json_path}: {e.strerror or 'error'}", EXIT_FAIL)
    if plot_path is not None:
        write_plot(result, plot_path)


def _run(args: argparse.Namespace, build_spec: Optional[Callable[[Any], Any]]) -> int:
    if getattr(args, "from_json", None):
        if getattr(args, "specs", None):
            raise BenchError("--from reports saved runs: it takes no SPEC")
        if not all(args.from_json):
            raise BenchError("--from: empty file name")
        json_path, plot_path = _output_paths(args)
        report(pool_results([Path(p) for p in args.from_json], getattr(args, "baseline", None)),
               json_path, plot_path)
        return EXIT_OK
    # ---- validate input before doing anything expensive
    variants = runnable_variants(select_variants(getattr(args, "workloads", None)))
    peer_names = parse_peer_list(getattr(args, "peers", None))
    pairs = getattr(args, "pairs", 6)
    if pairs is None or pairs < 1:
        raise BenchError("--pairs must be at least 1")
    scale = float(getattr(args, "scale", 1.0) or 1.0)
    if not (scale > 0 and math.isfinite(scale)):
        raise BenchError("--scale must be a positive number")
    timeout = float(getattr(args, "timeout", 600.0) or 600.0)
    spec_paths = [Path(s) for s in (getattr(args, "specs", None) or [])] or [DEFAULT_SPEC]
    for p in spec_paths:
        if not p.is_file():
            raise BenchError(f"spec not found: {p}")
    json_path, plot_path = _output_paths(args)

    # ---- build
    if build_spec is None:
        build_spec = load_build_spec()
    exes = compile_workloads(sorted({v.program for v in variants}))
    peers = resolve_peers(peer_names)
    specs = build_specs(spec_paths, build_spec, {p.name for p in peers} | set(PEER_LIBS))
    allocators = specs + peers
    names = [a.name for a in allocators]
    baseline = getattr(args, "baseline", None) or names[0]
    if baseline not in names:
        hint = " (it is not installed)" if baseline in PEER_LIBS and baseline in peer_names else ""
        raise BenchError(f"unknown baseline {baseline!r}{hint}; allocators: {', '.join(names)}")

    use_time = os.access(TIME_TOOL, os.X_OK)
    counter = instruction_counter() if any(v.instructions for v in variants) else None
    perf_event = counter.event if counter is not None else None
    instr_pairs = max(1024, int(INSTR_PAIRS * min(scale, 1.0)) // 128 * 128)

    # ---- run
    total = sum(pairs * v.pair_factor * len(allocators) for v in variants)
    if counter is not None:
        total += sum(len(allocators) for v in variants if v.instructions)
    progress = Progress(total)
    workloads: dict[str, Any] = {}
    any_failure = False
    try:
        for v in variants:
            samples: dict[str, list[dict[str, Any]]] = {a.name: [] for a in allocators}
            for i in range(pairs * v.pair_factor):
                for a in round_order(allocators, i):
                    progress.step(f"{v.name} {a.name}")
                    s = run_sample(exes[v.program], v, a, scale, timeout, use_time)
                    samples[a.name].append(s)
                    if not s["ok"]:
                        any_failure = True
                        progress.close()
                        print(f"hzgen bench: {v.name} under {a.name} failed: {s['error']}",
                              file=sys.stderr)
                    progress.advance()
            ipp: dict[str, Optional[float]] = {}
            if v.instructions:
                for a in allocators:
                    if counter is not None:
                        progress.step(f"{v.name} {a.name} ({counter.method})")
                        why: list[str] = []
                        ipp[a.name] = instructions_per_pair(exes[v.program], v, a, counter,
                                                            instr_pairs, timeout, why)
                        progress.advance()
                        if ipp[a.name] is None and counter.method == "callgrind":
                            # not a failed run: the table shows n/a
                            progress.close()
                            print(f"hzgen bench: callgrind could not count {v.name} under "
                                  f"{a.name}: {why[-1] if why else 'unknown error'}",
                                  file=sys.stderr)
                    else:
                        ipp[a.name] = None
            w = {
                "program": v.program,
                "args": list(v.args),
                "runs": pairs * v.pair_factor,
                "spread": v.spread,
                "instructions": v.instructions,
                "commands": {a.name: workload_command(exes[v.program], v, a, scale)
                             for a in allocators},
                "samples": samples,
            }
            w.update(summarize(samples, baseline))
            w["instructions_per_pair"] = ipp
            workloads[v.name] = w
    finally:
        progress.close()

    result = {
        "version": 1,
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "scale": scale,
            "pairs": pairs,
            "baseline": baseline,
            "allocator_names": names,
            "rss_source": "/usr/bin/time %M" if use_time else "wait4 ru_maxrss",
            "instructions_method": counter.method if counter is not None else None,
            "instructions_counter": counter.describe() if counter is not None else None,
            "perf_event": perf_event,
            "instr_pairs": instr_pairs if counter is not None else None,
            "cflags": CFLAGS,
        },
        "allocators": [a.to_json() for a in allocators],
        "workloads": workloads,
    }
    result["geomean_ratio"] = geomean_ratios(workloads, names)
    report(result, json_path, plot_path)
    if any_failure:
        print("hzgen bench: some runs failed (see above)", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="hzgen bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
