"""Workload profiles (written by `hzgen profile`): reading one, and the size classes it asks for.

Shared by the spec reader (`size_classes.scheme: profile`) and `hzgen preload`, so a spec that
names a profile and the spec `hzgen preload` writes from it get the same table.
"""
from __future__ import annotations

from pathlib import Path

from .yamldoc import DocumentError, read_document

MAX_CLASSES = 255       # a class index is a byte
HOT_FRACTION = 0.01     # a recorded size gets a class of its own from this share of allocations


class ProfileError(Exception):
    """A profile that cannot be used; the message starts with FILE:LINE:COL."""


def _shown_value(v) -> str:
    """a value in a message: short, whatever it is (aliases may make it large)"""
    text = repr(v) if isinstance(v, (int, float, str, bool)) or v is None else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def load_profile(path: Path, shown: str | None = None) -> dict:
    """The profile document, checked (read with the spec reader's bounds)."""
    shown = shown or str(path)
    try:
        doc, where = read_document(path, shown, "profile")
    except DocumentError as e:
        raise ProfileError(e.problems[0])

    def at(*keypath) -> str:
        return str(where.get(keypath) or where[()])

    version = doc.get("hzgen_profile")
    if type(version) is not int or version != 1:    # (True and 1.0 equal 1)
        raise ProfileError(f"{shown}:1:1: not an hzgen profile (expected `hzgen_profile: 1`; "
                           "write one with `hzgen profile -- CMD...`)")
    command = doc.get("command")
    if command is not None and not (isinstance(command, list)
                                    and all(isinstance(a, str) for a in command)):
        raise ProfileError(f"{at('command')}: `command` must be a list of strings (the "
                           f"command's words), got {_shown_value(command)}")
    classes = doc.get("classes")
    if not isinstance(classes, list):
        raise ProfileError(f"{at('classes')}: `classes` must be a list")
    seen: dict[int, int] = {}
    for i, c in enumerate(classes):
        if not isinstance(c, dict):
            raise ProfileError(f"{at('classes', i)}: classes[{i}]: expected a mapping")
        for k in ("size", "allocs", "frees", "remote_in", "remote_out"):
            v = c.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ProfileError(f"{at('classes', i, k)}: classes[{i}].{k}: expected a count, "
                                   f"got {_shown_value(v)}")
        if c["size"] <= 0:
            raise ProfileError(f"{at('classes', i, 'size')}: classes[{i}].size: expected a "
                               "positive size")
        if c["size"] in seen:
            raise ProfileError(f"{at('classes', i, 'size')}: classes[{i}].size: {c['size']} "
                               f"is classes[{seen[c['size']]}].size too (one entry per size)")
        seen[c["size"]] = i
    return doc


def hot_sizes(classes: list[dict]) -> list[tuple[int, int]]:
    """(size, allocs) of every recorded class with at least HOT_FRACTION of all allocations,
    most allocated first."""
    total = sum(c["allocs"] for c in classes)
    if not total:
        return []
    hot = [(c["size"], c["allocs"]) for c in classes if c["allocs"] >= HOT_FRACTION * total]
    return sorted(hot, key=lambda sa: (-sa[1], sa[0]))


def tuned_sizes(base_sizes: list[int], hot: list[tuple[int, int]], quantum: int,
                small_max: int) -> tuple[list[int], list[int], list[int]]:
    """(sizes, added, skipped): the base sizes plus the hot sizes that are new, fit
    (quantum multiple, from the base's smallest class, where its first tier range starts, to
    small_max) and stay within MAX_CLASSES, most allocated first."""
    have = set(base_sizes)
    smallest = min(base_sizes)
    added, skipped = [], []
    for size, _ in hot:
        if size in have:
            continue
        if size % quantum or not smallest < size <= small_max or len(have) >= MAX_CLASSES:
            skipped.append(size)
            continue
        have.add(size)
        added.append(size)
    return sorted(have), sorted(added), sorted(skipped)
