"""The `hzgen` command. Results go to stdout, progress and messages to stderr;
bad input is a clear message and a non-zero exit, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import select
import signal
import sys

from . import __version__

# The pipeline's modules (jinja2, yaml, ...) are imported inside main(), where a Ctrl-C during
# the imports is a message, not a traceback.


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def cmd_build(args) -> int:
    from .pipeline import build_spec, load_model
    from .spec import SpecError
    names: dict[str, str] = {}
    for spec in args.specs:          # all first: one spec must not overwrite another's build
        name = load_model(spec).name
        if name in names:
            raise SpecError([f"{spec}:1:1: has the name '{name}' of {names[name]}: both would "
                             "build into the same generated/ and build/ directories"])
        names[name] = spec
    for spec in args.specs:
        built = build_spec(spec, root=args.root)
        _err(f"hzgen: built {built.name}: {built.generated}/ -> {built.override.parent}/")
        print(built.prefixed)
        print(built.override)
    return 0


def cmd_validate(args) -> int:
    from .pipeline import load_model
    from .spec import SpecError
    status = 0
    for spec in args.specs:          # every spec is checked, also after a bad one
        try:
            m = load_model(spec)
        except SpecError as e:
            for line in e.problems:
                _err(line)
            status = 2
            continue
        print(f"{spec}: ok ({m.name}: {len(m.classes)} classes, "
              f"{len(m.ranges)} tier range{'s' if len(m.ranges) > 1 else ''})")
    return status


def cmd_classes(args) -> int:
    from .pipeline import load_model
    from .spec import fmt_size
    m = load_model(args.spec)
    print(f"# {m.name}: {len(m.classes)} classes, quantum {m.quantum}, small_max {m.small_max}, "
          f"slab unit {fmt_size(m.slab)}, segment {fmt_size(m.segment)}")
    print(f"{'class':>5} {'size':>7} {'slab':>8} {'blocks':>6} {'waste%':>7}  tiers")
    for c in m.classes:
        r = m.ranges[c.range_index]
        print(f"{c.index:>5} {c.size:>7} {fmt_size(c.slab_bytes):>8} {c.blocks:>6} "
              f"{c.waste_pct:>7.2f}  {' -> '.join(r.chain)}")
    return 0


TOOLS = {
    "diff": ("hzgen.diff", "what spec B changes against spec A: model summary, then the generated C"),
    "explain": ("hzgen.explain", "the allocator a spec describes, in words and tables"),
    "inspect": ("hzgen.inspect", "branches, loops, calls and instructions of the fast paths"),
    "stats": ("hzgen.statsview", "show an HZ_STATS exit report as a table or chart"),
    "profile": ("hzgen.profile", "run CMD under a recording allocator; write a workload profile"),
    "preload": ("hzgen.preload", "derive a spec tuned to a profile, build it, print LD_PRELOAD=..."),
    "bench": ("hzgen.bench", "benchmark specs against glibc, mimalloc, jemalloc, tcmalloc"),
}
TOOLS = {k: v for k, v in TOOLS.items()
         if importlib.util.find_spec(v[0]) is not None}   # tools land one by one


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hzgen", description="Allocator compiler: YAML spec -> C malloc.")
    p.add_argument("--version", action="version", version=f"hzgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="validate, render generated/<name>/, compile build/<name>/")
    b.add_argument("specs", nargs="+", metavar="SPEC")
    b.add_argument("--root", default=None, help="project root for generated/ and build/ (default: .)")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("validate", help="check specs; errors as FILE:LINE:COL: message")
    v.add_argument("specs", nargs="+", metavar="SPEC")
    v.set_defaults(func=cmd_validate)

    c = sub.add_parser("classes", help="print the resolved size-class table")
    c.add_argument("spec", metavar="SPEC")
    c.set_defaults(func=cmd_classes)

    # tool commands: each module brings its own arguments and run(args) -> exit code
    for name, (module, helptext) in TOOLS.items():
        mod = importlib.import_module(module)
        t = sub.add_parser(name, help=helptext, description=helptext)
        mod.add_arguments(t)
        t.set_defaults(func=mod.run)
    return p


def _stdout_gone() -> bool:
    """Is stdout a pipe nobody reads any more? (poll reports an error on it)"""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


class Terminated(BaseException):
    """SIGTERM (`timeout hzgen ...`): unwinds like Ctrl-C, so no half-made output is left."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    try:
        parser = make_parser()       # (imports every command's module)
        import jinja2                # what _run needs, loaded here, where a Ctrl-C is caught
        from . import build, spec, tool
        del jinja2, build, spec, tool
    except KeyboardInterrupt:
        _err("hzgen: interrupted")
        return 130
    args = parser.parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:   # an inherited ignore stays
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(args)
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    import jinja2

    from .build import BuildError
    from .spec import SpecError
    from .tool import silence_stdout
    try:
        return args.func(args)
    except SpecError as e:
        for line in e.problems:
            _err(line)
        return 2
    except BuildError as e:
        _err(f"hzgen: {e}")
        return 1
    except BrokenPipeError:   # (before OSError) `hzgen ... | head`: the reader left
        if not _stdout_gone():
            return 1          # it was stderr: nothing can be said, but it is no success
        silence_stdout()
        return 0
    except jinja2.TemplateError as e:    # a broken install
        _err(f"hzgen: {e}")
        return 1
    except OSError as e:    # a file that cannot be read or written: bad input (`diff`: not 1)
        _err(f"hzgen: {e}")
        return 2
    except RuntimeError as e:
        if not str(e).startswith("Symlink loop"):   # Path.resolve() of a loop (Python 3.11)
            raise
        _err(f"hzgen: {e}")
        return 2
    except KeyboardInterrupt:
        _err("hzgen: interrupted")
        return 130
    except Terminated:
        _err("hzgen: terminated")
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
