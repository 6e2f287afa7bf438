"""`hzgen diff A B`: what spec B changes against spec A.

Output (stdout), in this order:
  1. a model-level summary: every item of `hzgen explain`'s vocabulary that differs (name,
     threads, size-class table, superslab geometry, remote-free strategy, large box, backing,
     stats, checks, each boundary), then the size classes added, removed or resized, the class
     ranges with their tier chains, the per-class tier chain with capacity/refill/drain
     (`sll 256/32/128`: the caps a max_bytes budget gives), and the slab geometry of classes both
     sides share;
  2. a unified diff (---, +++, @@) of the generated C, file by file (`a/<name A>/<file>`,
     `b/<name B>/<file>`; a file only one side has is diffed against /dev/null).

Both sides are rendered in memory (a spec at a git revision is read into a temporary directory):
nothing is written into generated/ or build/.

The stamp: the first two lines of every generated file name the hzgen version, the spec name,
the spec digest and the path the spec was read from. They are left out of the C comparison
(hunk line numbers still count them, so they match the files on disk); the summary shows the
digest change instead. So the same spec read from two places (a file and `file@HEAD`) is
identical, exit 0.

Exit status, like diff(1): 0 when the model and the generated C are identical, 1 when they
differ (whatever --model/--stat show), 2 on bad input. Two specs that differ only in keys with
no effect (say a `delay_ms` under `release: immediate`) show the digest change and exit 0.

A side `PATH@REV` is the spec PATH as it is in git revision REV (`specs/default.yaml@HEAD~3`),
read with `git show REV:PATH` together with every `extends:` base it names, recursively, and the
workload profile a `scheme: profile` table names, from
the same revision. A PATH that exists as a file is always taken as a file, even with an `@`.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from .explain import class_signature, facts, range_chain
from .model import Model
from .spec import SpecError
from .tool import ToolError, guarded, runs, silence_stdout

STAMP_LINES = 2


@dataclass
class Side:
    label: str            # as the user wrote it
    model: Model
    files: dict           # filename -> rendered C


# ---------------------------------------------------------------- specs at git revisions

def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """git's answer; stdout as bytes (a file at a revision need not be UTF-8), stderr as text"""
    try:
        r = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True)
    except FileNotFoundError:
        raise ToolError("git is not installed (needed for PATH@REV)")
    r.stderr = r.stderr.decode(errors="replace")
    return r


def fetch_revision(arg: str, path: str, rev: str, tmp: Path) -> Path:
    """Write PATH, its extends: chain and the profile its table names as of REV under tmp;
    returns the copy of PATH."""
    absolute = Path(os.path.realpath(Path.cwd() / path))
    d = absolute.parent
    while not d.is_dir():
        d = d.parent
    top = _git(d, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ToolError(f"{arg}: {d} is not inside a git repository")
    top_dir = Path(os.path.realpath(top.stdout.decode(errors="replace").strip()))
    if _git(top_dir, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        raise ToolError(f"{arg}: unknown revision '{rev}'")
    try:
        rel = absolute.relative_to(top_dir).as_posix()
    except ValueError:
        raise ToolError(f"{arg}: {path} is outside the git repository {top_dir}")

    seen: set[str] = set()

    def beside(rel: str, key: str, ref: str) -> str:
        """the file `ref` names relative to rel, inside the repository"""
        if os.path.isabs(ref):
            raise ToolError(f"{arg}: {key} '{ref}' of {rel} is an absolute path, "
                            f"not a file of revision {rev}")
        other = os.path.normpath(os.path.join(os.path.dirname(rel), ref))
        if other == ".." or other.startswith("../"):
            raise ToolError(f"{arg}: {key} '{ref}' of {rel} leaves the repository")
        return Path(other).as_posix()

    def fetch(rel: str, why: str, spec: bool = True, profile_set: bool = False) -> None:
        if rel in seen:
            return                       # an extends loop: load_spec reports it
        seen.add(rel)
        kind = _git(top_dir, "cat-file", "-t", f"{rev}:{rel}")
        if kind.returncode != 0 or kind.stdout.strip() != b"blob":
            raise ToolError(f"{arg}: {why}no file '{rel}' at revision {rev}")
        r = _git(top_dir, "cat-file", "blob", f"{rev}:{rel}")
        dest = tmp / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(r.stdout)
        except OSError as e:             # a file where this revision has a directory, or so
            raise ToolError(f"{arg}: {why}cannot copy '{rel}' of revision {rev}: {e.strerror}")
        if not spec:
            return
        try:
            data = yaml.safe_load(r.stdout)
        except (yaml.YAMLError, RecursionError, ValueError, UnicodeDecodeError):
            return                       # load_spec reports the problem with its position
        data = data if isinstance(data, dict) else {}
        sc = data.get("size_classes")
        sc = sc if isinstance(sc, dict) else {}
        # only the profile the merged spec uses: the most derived file that sets the key
        prof = sc.get("profile")
        if not profile_set and isinstance(prof, str) and prof:
            fetch(beside(rel, "profile", prof), f"profile '{prof}' of {rel}: ", spec=False)
        ext = data.get("extends")
        if isinstance(ext, str) and ext:
            fetch(beside(rel, "extends", ext), f"extends '{ext}' of {rel}: ",
                  profile_set=profile_set or "profile" in sc)

    fetch(rel, "")
    return tmp / rel


def _relabel(e: SpecError, tmp: Path, rev: str) -> SpecError:
    """Spec errors of a revision copy name `path@REV:LINE:COL`, not the temporary file."""
    out = []
    for p in e.problems:
        m = re.match(r"^(.*?):(\d+):(\d+): (.*)$", p, re.S)
        if m and m.group(1).startswith(str(tmp)):
            rel = os.path.relpath(os.path.normpath(m.group(1)), tmp)
            p = f"{rel}@{rev}:{m.group(2)}:{m.group(3)}: {m.group(4)}"
        out.append(p.replace(str(tmp) + os.sep, ""))
    return SpecError(out)


def load_side(arg: str, stack: ExitStack) -> Side:
    from .pipeline import render_spec
    if Path(arg).is_file() or "@" not in arg:
        m, files = render_spec(arg)
        return Side(arg, m, files)
    path, _, rev = arg.rpartition("@")
    if not path or not rev:
        raise ToolError(f"{arg}: expected a spec file or PATH@REV")
    tmp = Path(os.path.realpath(stack.enter_context(tempfile.TemporaryDirectory(prefix="hzdiff-"))))
    copy = fetch_revision(arg, path, rev, tmp)
    try:
        m, files = render_spec(copy)
    except SpecError as e:
        raise _relabel(e, tmp, rev) from None
    return Side(arg, m, files)


# ---------------------------------------------------------------- the model summary

def _class_changes(a: Model, b: Model) -> list[str]:
    sa, sb = [c.size for c in a.classes], [c.size for c in b.classes]
    out = []
    added, removed, resized = [], [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=sa, b=sb, autojunk=False).get_opcodes():
        if op == "replace" and i2 - i1 == j2 - j1:
            resized += [f"{sa[i]}->{sb[j]}" for i, j in zip(range(i1, i2), range(j1, j2))]
        elif op != "equal":
            removed += [str(s) for s in sa[i1:i2]]
            added += [str(s) for s in sb[j1:j2]]
    for what, items in (("added", added), ("removed", removed), ("resized", resized)):
        if items:
            out.append(f"  size classes {what} ({len(items)}): {' '.join(items)}")
    both = sorted(set(sa) & set(sb))
    ga = {c.size: c for c in a.classes}
    gb = {c.size: c for c in b.classes}
    geo = [f"{s} ({ga[s].units}x{ga[s].blocks} -> {gb[s].units}x{gb[s].blocks})" for s in both
           if (ga[s].units, ga[s].blocks) != (gb[s].units, gb[s].blocks)]
    if geo:
        out.append(f"  slab geometry (units x blocks) changed for {len(geo)} class(es): "
                   + ", ".join(geo))
    return out


def _tier_changes(a: Model, b: Model) -> list[str]:
    out = []
    ra, rb = [range_chain(r) for r in a.ranges], [range_chain(r) for r in b.ranges]
    if ra != rb:
        out.append("  class ranges (tier cap/refill/drain):")
        out += [f"    - {x}" for x in ra if x not in rb]
        out += [f"    + {x}" for x in rb if x not in ra]
    ia = {c.size: c.index for c in a.classes}
    ib = {c.size: c.index for c in b.classes}
    both = [s for s in sorted(ia) if s in ib]
    pairs = [(class_signature(a, ia[s]), class_signature(b, ib[s])) for s in both]
    changed = []
    for i, j in runs(list(range(len(both))), lambda k: pairs[k]):
        sa, sb = pairs[i]
        if sa != sb:
            sizes = f"{both[i]} B" if i == j else f"{both[i]}..{both[j]} B"
            changed.append(f"    {sizes}: {sa}  =>  {sb}")
    if changed:
        out.append("  per-class tiers (cap/refill/drain), classes on both sides:")
        out += changed
    return out


def summary(a: Model, b: Model) -> list[str]:
    """The model-level differences, one line each; empty when the models agree."""
    fb = dict(facts(b))
    lines = []
    for key, va in facts(a):
        vb = fb[key]
        if va != vb:
            lines.append(f"  {key}: {va}  =>  {vb}" if len(va) + len(vb) < 90 else
                         f"  {key}:\n    - {va}\n    + {vb}")
    lines += _class_changes(a, b)
    lines += _tier_changes(a, b)
    if a.spec_digest != b.spec_digest:
        lines.append(f"  spec digest: {a.spec_digest} => {b.spec_digest}"
                     + ("" if lines else " (no effect on the model)"))
    return lines


# ---------------------------------------------------------------- the C diff

def _body(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    return lines[STAMP_LINES:] if lines and lines[0].startswith("/* Generated by hzgen") else lines


_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def _shift(line: str, off_a: int, off_b: int) -> str:
    """Hunk line numbers count the stamp lines left out of the comparison."""
    m = _HUNK.match(line)
    if not m:
        return line
    return (f"@@ -{int(m.group(1)) + off_a}{m.group(2) or ''} "
            f"+{int(m.group(3)) + off_b}{m.group(4) or ''} @@" + line[m.end():])


def file_diffs(a: Side, b: Side) -> list[tuple[str, list[str]]]:
    """(filename, unified diff lines) of every file that differs (stamps left out)."""
    out = []
    for name in sorted(set(a.files) | set(b.files)):
        ta, tb = a.files.get(name), b.files.get(name)
        la, lb = _body(ta or ""), _body(tb or "")
        if ta is not None and tb is not None and la == lb:
            continue
        off_a = len((ta or "").splitlines()) - len(la) if ta is not None else 0
        off_b = len((tb or "").splitlines()) - len(lb) if tb is not None else 0
        fa = f"a/{a.model.name}/{name}" if ta is not None else "/dev/null"
        fb = f"b/{b.model.name}/{name}" if tb is not None else "/dev/null"
        lines = [_shift(x, off_a, off_b) for x in difflib.unified_diff(la, lb, fa, fb)]
        out.append((name, [x if x.endswith("\n") else x + "\n\\ No newline at end of file\n"
                           for x in lines]))
    return out


def stat_lines(diffs: list[tuple[str, list[str]]]) -> list[str]:
    counts = []
    for name, lines in diffs:
        body = [x for x in lines if not x.startswith(("---", "+++"))]
        counts.append((name, sum(x.startswith("+") for x in body),
                       sum(x.startswith("-") for x in body)))
    if not counts:
        return []
    w = max(len(n) for n, _, _ in counts)
    most = max(p + m for _, p, m in counts)
    nw = len(str(most))
    scale = min(1.0, 50 / most) if most else 1.0

    def bar(n: int, ch: str) -> str:
        return ch * max(1 if n else 0, round(n * scale))
    out = [f" {n:<{w}} | {p + m:>{nw}} {bar(p, '+')}{bar(m, '-')}\n" for n, p, m in counts]
    ins, dels = sum(p for _, p, _ in counts), sum(m for _, _, m in counts)
    out.append(f" {len(counts)} file{'s' * (len(counts) != 1)} changed, {ins} insertions(+), "
               f"{dels} deletions(-)\n")
    return out


# ---------------------------------------------------------------- output

COLORS = {"-": "\033[31m", "+": "\033[32m", "@": "\033[36m", "#": "\033[1m"}
RESET = "\033[0m"


def use_color(mode: str, stream) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return (hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb")


def paint(line: str, color: bool, summary: bool = False) -> str:
    """Color one output line: headers bold, removed red, added green, hunk headers cyan.
    Summary lines are indented (`  - old`); diff lines are judged by their first character."""
    if not color:
        return line
    if line.startswith(("# ", "diff ", "--- ", "+++ ")):
        key = "#"
    else:
        key = (line.lstrip(" ") if summary else line)[:1]
        key = "@" if key == "@" and (summary or line.startswith("@@")) else key
    if key not in COLORS:
        return line
    return COLORS[key] + line.rstrip("\n") + RESET + ("\n" if line.endswith("\n") else "")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="spec file, or PATH@REV (a spec in git revision REV)")
    p.add_argument("b", metavar="B", help="spec file, or PATH@REV")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--stat", action="store_true",
                   help="after the summary, files and changed line counts instead of the diff")
    g.add_argument("--model", action="store_true", help="the model summary only")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="color the output (auto: when stdout is a terminal)")


@guarded("diff")
def run(args) -> int:
    with ExitStack() as stack:
        a = load_side(args.a, stack)
        b = load_side(args.b, stack)
    lines = summary(a.model, b.model)
    diffs = file_diffs(a, b)
    color = use_color(args.color, sys.stdout)
    head = [f"# model: {a.label} ({a.model.name}) -> {b.label} ({b.model.name})\n"]
    head += [x + "\n" for x in lines] if lines else ["  (no model differences)\n"]
    out = []
    if not args.model:
        out.append(f"# generated C: {len(diffs)} of {len(set(a.files) | set(b.files))} files "
                   "differ (stamp lines left out)\n")
        if args.stat:
            out += stat_lines(diffs)
        else:
            for name, dl in diffs:
                out.append(f"diff --hzgen a/{a.model.name}/{name} b/{b.model.name}/{name}\n")
                out += dl
    model_differs = any(not x.startswith("  spec digest:") for x in lines)
    try:   # the status says whether the specs differ, even to `hzgen diff A B | head`
        sys.stdout.write("".join([paint(x, color, summary=True) for x in head]
                                 + [paint(x, color) for x in out]))
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    return 1 if (model_differs or diffs) else 0
