"""Shared plumbing of the tool commands (diff, explain, inspect, stats): the bad-input error,
the wrapper that turns it into a message and exit 2, and plain-text tables."""
from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path


class ToolError(Exception):
    """Bad input for a tool command (missing file, unknown revision, malformed report):
    one clear message, exit 2."""


def guarded(command: str):
    """Decorate a tool's run(args): a ToolError becomes `hzgen COMMAND: message` and exit 2.
    SpecError and BuildError propagate to cli.main(), which reports them like `build` does."""
    def wrap(run):
        @functools.wraps(run)
        def inner(args) -> int:
            try:
                return run(args)
            except ToolError as e:
                print(f"hzgen {command}: {e}", file=sys.stderr)
                return 2
        return inner
    return wrap


def check_output(option: str, path) -> None:
    """A file a command will write (`-o`): said wrong before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise ToolError(f"{option} {path}: is a directory")
    if not path.parent.is_dir():
        raise ToolError(f"{option} {path}: no such directory {path.parent}")
    try:   # the file is written through a temporary one beside it: that must be possible
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise ToolError(f"{option} {path}: cannot write in {path.parent}: {e.strerror}")
    os.close(fd)
    os.unlink(probe)


def publish_mode(path, executable: bool = False) -> None:
    """Give a file or directory made by mkstemp/mkdtemp (0600/0700) the mode a plain create
    would have (0644/0755 under the usual umask): a library other users cannot read cannot
    be preloaded by them."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if executable or os.path.isdir(path) else 0o666) & ~mask)


def silence_stdout() -> None:
    """stdout's reader left (`| head`): later writes, and the interpreter's flush at exit,
    go to /dev/null instead of raising again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def table(header: list[str], rows: list[list], right: set | None = None, indent: str = "") -> list[str]:
    """Rows of cells as aligned text lines; columns in `right` (indexes) are right-aligned
    (default: every column but the first)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    right = set(range(1, len(header))) if right is None else right
    out = []
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append((indent + "  ".join(parts)).rstrip())
    return out


def runs(items: list, key) -> list[tuple[int, int]]:
    """Index ranges [i, j] (inclusive) of consecutive items with equal key(item)."""
    out: list[tuple[int, int]] = []
    for i, it in enumerate(items):
        if out and key(items[out[-1][0]]) == key(it):
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
