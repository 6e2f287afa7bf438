"""Shared plumbing of the tool commands (diff, explain, inspect, stats, profile, preload, bench):
the bad-input error and the wrapper that turns it into a message and exit 2, bounded reading of
input files, checking output files before any work and writing them whole, and plain-text tables."""
from __future__ import annotations

import functools
import json
import os
import stat
import sys
import tempfile
from pathlib import Path


class ToolError(Exception):
    """Bad input for a tool command (missing file, unknown revision, malformed report):
    one clear message, exit 2."""


def brief(v) -> str:
    """v, short, for a message: never the whole of a long string, a huge number or a nested
    structure read from a file"""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, str):
        return repr(v[:40]) + ("..." if len(v) > 40 else "")
    if isinstance(v, float) or (isinstance(v, int) and abs(v) < 10 ** 30):
        return repr(v)
    return {int: "a huge number", list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


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


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def size_text(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"


def read_regular(path, limit: int) -> bytes:
    """The bytes of the regular file at path (a symbolic link to one is followed), at most
    limit of them: anything else (a FIFO would block, /dev/zero never ends), an unreadable file
    or a larger one is a ToolError `PATH: ...` (`hzgen stats`, `hzgen bench --from`)."""
    name = os.fspath(path)
    try:
        st = os.stat(name)            # (before open: opening a device may do something)
    except FileNotFoundError:
        raise ToolError(f"{name}: cannot read: no such file")
    except (OSError, ValueError) as e:     # ValueError: a NUL in the name
        raise ToolError(f"{name}: cannot read: {getattr(e, 'strerror', None) or 'bad file name'}")
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{name}: cannot read: {_kind(st.st_mode)}, not a regular file")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ToolError(f"{name}: cannot read: {e.strerror or 'error'}")
    try:
        st = os.fstat(fd)             # what was opened (it may have been replaced since)
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{name}: cannot read: {_kind(st.st_mode)}, not a regular file")
        chunks, size = [], 0
        while size <= limit and st.st_size <= limit:     # (st_size: 0 for a /proc file)
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit or st.st_size > limit:
            raise ToolError(f"{name}: too large (more than {size_text(limit)})")
        return b"".join(chunks)
    except OSError as e:
        raise ToolError(f"{name}: cannot read: {e.strerror or 'error'}")
    finally:
        os.close(fd)


def check_output_file(option: str, name: str, follow: bool = True) -> Path:
    """The file an option (--plot, --json) will write, checked before any work: not empty, not
    a directory or a device (the file is written by a rename over it), in an existing directory
    where a file can be made. With `follow`, a symbolic link is followed (what it points at is
    written); without, the link itself is what the rename replaces.
    Returns that path; anything wrong is a ToolError."""
    if not name:
        raise ToolError(f"{option}: empty file name")
    if "\0" in name:
        raise ToolError(f"{option} {name!r}: bad file name")
    path = Path(os.path.realpath(name) if follow else os.path.abspath(name))
    try:
        st = os.stat(path) if follow else os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            st = None                 # replaced by the rename, whatever it points at
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{option} {name}: is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{option} {name}: is {_kind(st.st_mode)}, not a regular file")
    if st is not None and not os.access(path, os.W_OK):
        raise ToolError(f"{option} {name}: is not writable")
    if not path.parent.is_dir():
        raise ToolError(f"{option} {name}: no such directory {path.parent}")
    try:                              # can a file be made there (a read-only mount, /proc)?
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as e:
        raise ToolError(f"{option} {name}: cannot create a file in {path.parent}: "
                        f"{e.strerror or 'error'}")
    os.close(fd)
    os.unlink(probe)
    return path


def check_output(option: str, path) -> None:
    """A file a command will write (`-o`, replaced by a rename: a symbolic link there is
    replaced, not followed): said wrong before any work is done."""
    check_output_file(option, str(path), follow=False)


def publish(path, fill, check=None) -> None:
    """Make path through a temporary file beside it: fill(tmp) writes it, check(tmp), when
    given, may refuse it (an exception leaves path untouched); then it gets a plain file's mode
    and is renamed over path, so a reader sees the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fill(tmp)
        if check is not None:
            check(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def one_line(text: str) -> str:
    """text for a `#` comment or a message line: a line break (or any other character that is
    not printable) in a command or a path would end the comment"""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def write_atomic(path, text: str, check=None) -> None:
    """publish() of a text file"""
    publish(path, lambda tmp: Path(tmp).write_text(text), check)


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
