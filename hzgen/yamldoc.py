"""Reading a YAML document of ours (a spec, a workload profile) without trusting it.

Bounded in bytes, in values once aliases are expanded and in depth, so a small hostile file (a
"billion laughs", thousands of nested brackets, /dev/zero) is an error, not an exhausted
machine; every problem is `FILE:LINE:COL: message`, never a Python traceback; every value
keeps its position (for error messages) and the file it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

MAX_BYTES = 1 << 20      # a real spec is a few KiB, a profile a few tens
MAX_VALUES = 100_000     # a real spec has a few hundred values, a profile a few thousand
MAX_DEPTH = 32           # and both nest five deep


class DocumentError(Exception):
    """One or more `FILE:LINE:COL: message` problems."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Where:
    file: str            # as shown in messages
    line: int
    col: int
    source: Path | None = field(default=None, compare=False)   # the path the file was read by

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def read_document(path: Path, shown: str, what: str) -> tuple[dict, dict]:
    """(data, where) of the YAML mapping in `path`; `where` maps key paths (and ("key",) + key
    paths, for the keys themselves) to positions. `what` names the document in messages."""
    try:
        if path.exists() and not path.is_file():   # a directory, /dev/zero, a fifo
            raise DocumentError([f"{shown}:1:1: not a regular file"])
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise DocumentError([f"{shown}:1:1: {size} bytes: too large for a {what} "
                                 f"(at most {MAX_BYTES})"])
        text = path.read_text()
    except FileNotFoundError:
        raise DocumentError([f"{shown}:1:1: no such {what} file"])
    except (OSError, UnicodeDecodeError) as e:
        raise DocumentError([f"{shown}:1:1: cannot read {what}: {e}"])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:   # PyYAML composes recursively
        raise DocumentError([f"{shown}:1:1: the {what} is nested too deeply"])
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise DocumentError([f"{shown}:{line}:{col}: YAML syntax error: {e.problem or e}"])
    except yaml.reader.ReaderError as e:   # a character YAML does not allow: at its place
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise DocumentError([f"{shown}:{line}:{col}: YAML error: unacceptable character "
                             f"#x{e.character:04x} (not allowed in YAML)"])
    except yaml.YAMLError as e:
        raise DocumentError([f"{shown}:1:1: YAML error: {str(e).splitlines()[0]}"])
    if node is None:
        raise DocumentError([f"{shown}:1:1: empty {what}"])
    where: dict = {}
    constructor = yaml.SafeLoader("")
    problems: list[str] = []
    budget = [MAX_VALUES]

    def at(node) -> Where:
        return Where(shown, node.start_mark.line + 1, node.start_mark.column + 1, path)

    def scalar(n):
        try:
            return constructor.construct_object(n, deep=True)
        except (yaml.YAMLError, ValueError) as e:   # ValueError: a date 2024-13-45, 5000 digits
            problems.append(f"{at(n)}: {str(e).splitlines()[0]}")
            return None

    def convert(n, keypath):
        # aliases expand here: bound the values and the depth
        budget[0] -= 1
        if budget[0] < 0 or len(keypath) > MAX_DEPTH:
            raise DocumentError([f"{at(n)}: the {what} is too large or too deep once its aliases "
                                 f"are expanded (at most {MAX_VALUES} values, nested {MAX_DEPTH} deep)"])
        where[keypath] = at(n)
        if isinstance(n, yaml.MappingNode):
            out = {}
            for k, v in n.value:
                if k.tag == "tag:yaml.org,2002:merge":
                    problems.append(f"{at(k)}: YAML merge keys (<<) are not supported"
                                    + ("; use `extends:`" if what == "spec" else ""))
                    continue
                if not isinstance(k, yaml.ScalarNode):
                    problems.append(f"{at(k)}: keys must be strings")
                    continue
                key = scalar(k)
                if not isinstance(key, str):
                    problems.append(f"{at(k)}: keys must be strings, got {key!r}")
                    continue
                if key in out:
                    problems.append(f"{at(k)}: duplicate key '{key}'")
                where[("key",) + keypath + (key,)] = at(k)
                out[key] = convert(v, keypath + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [convert(v, keypath + (i,)) for i, v in enumerate(n.value)]
        return scalar(n)

    data = convert(node, ())
    if problems:
        raise DocumentError(problems)
    if not isinstance(data, dict):
        got = "an empty document" if data is None else type(data).__name__
        raise DocumentError([f"{shown}:1:1: a {what} is a mapping of keys, got {got}"])
    return data, where
