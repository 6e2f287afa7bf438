"""`hzgen preload --profile FILE [--base SPEC] [-o SPEC_OUT]`: derive a spec tuned to a workload
profile (written by `hzgen profile`), write it, build it, and print `LD_PRELOAD=/abs/lib.so`
as the last stdout line.

The tuning, on purpose simple and explainable:
  - size classes: the base's class sizes plus an exact class for every recorded class size that
    carries at least 1% of all small allocations (recorded sizes are the recorder's classes:
    multiple of 16 up to 1 KiB, of 64 up to 8 KiB), merged, sorted, ending at the base's
    small_max; written as `size_classes.extra` over a geometric base, as the whole `scheme:
    explicit` list over an explicit one; at most 255 classes (the least allocated extra sizes
    are dropped first);
  - everything else is inherited from the base (`extends:` its absolute path), the tiers too
    (their ranges end on base class sizes, which all remain). In particular the remote-free
    strategy is kept even when the profile shows no remote frees: the program may still be
    threaded.
The written spec starts with a comment saying what was derived from what (counts).

--base: the spec to tune (default: the profile's `base`, else specs/default.yaml of the hzgen
checkout). -o: the spec to write (default: `<profile stem>-tuned.yaml` next to the profile; the
allocator name is that file name as a lower-case C identifier, `tuned` if nothing is left).
The build goes into generated/<name>/ and build/<name>/ of the working directory, like
`hzgen build`.

Exit status: 0 built; 2 bad input (missing or malformed profile, missing or invalid base);
1 when the build fails.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import yaml

from .model import resolve
from .profile import DEFAULT_BASE
from .spec import (IDENT_RE, SpecError, description_line, explicit_table, geometric_sizes,
                   load_spec)
from .tool import ToolError, check_output, guarded, one_line, write_atomic
from .workload import (HOT_FRACTION, MAX_CLASSES, ProfileError, hot_sizes, load_profile,
                       tuned_sizes)

def ident_from(stem: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    name = re.sub(r"^[^a-z]+", "", name)[:32].rstrip("_")
    return name if IDENT_RE.match(name) else "tuned"


def size_classes_of(sc: dict, sizes: list[int], small_max: int) -> dict:
    """The tuned spec's size_classes over the base's `sc`: over a geometric base only the sizes
    its steps do not give (`extra`, the base's own extras included: a list replaces the
    base's), so the spec reads as what was added; over an explicit or a profile base the
    whole list."""
    if sc["scheme"] != "geometric":
        return explicit_table(sizes, small_max)
    steps = set(geometric_sizes(sc["quantum"], sc["min"], sc["linear_until"],
                                sc["steps_per_doubling"], sc["small_max"]))
    extra = sorted(set(sizes) - steps)
    return {"extra": extra} if extra else {}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, metavar="FILE",
                   help="a profile written by `hzgen profile`")
    p.add_argument("--base", default=None, metavar="SPEC",
                   help="the spec to tune (default: the profile's base, else specs/default.yaml)")
    p.add_argument("-o", "--output", default=None, metavar="SPEC_OUT",
                   help="the spec to write (default: <profile stem>-tuned.yaml next to the profile)")
    p.add_argument("--root", default=None,
                   help="project root for generated/ and build/ (default: .)")


@guarded("preload")
def run(args) -> int:
    from .pipeline import build_spec, load_model

    prof_path = Path(args.profile)
    try:
        prof = load_profile(prof_path)
    except ProfileError as e:
        raise ToolError(str(e))
    if args.base:
        base = Path(args.base)
        if not base.is_file():
            raise ToolError(f"--base {args.base}: no such spec file")
    elif prof.get("base") is not None:    # never another allocator in its place, silently
        if not (isinstance(prof["base"], str) and Path(prof["base"]).is_file()):
            raise ToolError(f"the profile's base spec {prof['base']!r} is gone (pass --base SPEC)")
        base = Path(prof["base"])
    elif DEFAULT_BASE.is_file():
        base = DEFAULT_BASE
    else:
        raise ToolError(f"no base spec: the profile's base and {DEFAULT_BASE} are absent "
                        "(pass --base SPEC)")
    base = base.resolve()
    base_spec = load_spec(base)   # SpecError propagates: FILE:LINE:COL messages
    m = resolve(base_spec)

    out = Path(args.output) if args.output else \
        prof_path.with_name(f"{prof_path.stem}-tuned.yaml")
    if out.resolve() == prof_path.resolve():
        raise ToolError(f"-o {out}: would overwrite the profile")
    if out.resolve() in {f.resolve() for f in base_spec.files}:
        raise ToolError(f"-o {out}: would overwrite the base spec or a spec it extends")
    check_output("-o", out)
    if args.root and Path(args.root).exists() and not Path(args.root).is_dir():
        raise ToolError(f"--root {args.root}: not a directory")   # before the spec is written
    name = ident_from(out.stem)

    classes = prof["classes"]
    total = sum(c["allocs"] for c in classes)
    hot = hot_sizes(classes)
    base_sizes = [c.size for c in m.classes]
    sizes, added, skipped = tuned_sizes(base_sizes, hot, m.quantum, m.small_max)
    remote = sum(c["remote_in"] + c["remote_out"] for c in classes)
    hot_share = sum(a for _, a in hot)

    header = [
        f"# Tuned by `hzgen preload` from the profile {one_line(str(prof_path.resolve()))}",
        f"#   command: {one_line(shlex.join(prof.get('command') or [])) or '?'}",
        f"#   {total} small allocations in {len(classes)} recorded classes; {len(hot)} "
        f"carry >= {HOT_FRACTION:.0%} each ({hot_share} allocations, "
        f"{100.0 * hot_share / total if total else 0:.1f}%)",
        f"#   hot sizes: {' '.join(str(s) for s, _ in sorted(hot)) or 'none'}",
        f"# size classes: the {len(base_sizes)} classes of the base + {len(added)} exact hot "
        f"size(s) ({' '.join(map(str, added)) or 'none'}) = {len(sizes)} classes"
        + (f"; skipped {' '.join(map(str, skipped))} (quantum, below the smallest class, "
           f"small_max or the {MAX_CLASSES}-class cap)" if skipped else ""),
        f"# remote frees in the profile: {remote}; remote_free inherited from the base "
        "(kept even when 0: the program may still be threaded)",
        f"# everything else: inherited from {one_line(str(base))}",
    ]
    spec = {
        "name": name,
        "extends": str(base),
        "description": description_line(f"{base.stem} tuned to the profile {prof_path.name}"),
    }
    classes = size_classes_of(base_spec.data["size_classes"], sizes, m.small_max)
    if classes:                         # nothing hot beyond the base: its classes as they are
        spec["size_classes"] = classes
    text = "\n".join(header) + "\n" + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)
    def check(tmp) -> None:
        """validated before it replaces anything; a problem is named in the file it is for"""
        try:
            load_model(tmp)
        except SpecError as e:
            raise ToolError("the tuned spec does not validate (a bug of hzgen's): "
                            + str(e).replace(Path(tmp).name, out.name))

    if not total:
        print(f"hzgen preload: the profile records no small allocations: {out} gets the base's "
              "classes as they are", file=sys.stderr)
    write_atomic(out, text, check=check)
    print(f"hzgen preload: wrote {out} ({name}: {len(sizes)} classes, {len(added)} added)",
          file=sys.stderr)
    built = build_spec(out, root=args.root)
    print(f"LD_PRELOAD={built.override.resolve()}")
    return 0
