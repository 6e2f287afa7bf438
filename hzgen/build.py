"""Stage 4: compile rendered C into the two libraries of a spec.

  build/<name>/libhz_<name>.so           the override library: exports malloc, free, ... (LD_PRELOAD)
  build/<name>/libhz_<name>_prefixed.so  exports hz_<name>_malloc, ... (loaded by tests via cffi)
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .tool import publish_mode

CFLAGS = ["-O2", "-g", "-fPIC", "-shared", "-pthread", "-std=gnu11",
          "-Wall", "-Wextra", "-Werror",
          "-fvisibility=hidden", "-ftls-model=initial-exec", "-fno-semantic-interposition",
          # our calloc is malloc + memset: never let gcc turn that back into a call to calloc
          "-fno-builtin-malloc", "-fno-builtin-calloc", "-fno-builtin-free",
          "-fno-builtin-realloc", "-fno-tree-loop-distribute-patterns",
          # never unmapped by dlclose: the purger thread, the heaps' TLS destructors and
          # memory handed out run on or point into this library's code and data
          "-Wl,-z,nodelete"]


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Built:
    name: str
    generated: Path
    override: Path
    prefixed: Path


def compiler() -> str:
    return os.environ.get("CC", "cc")


def _fingerprint(gen_dir: Path, variants) -> str:
    h = hashlib.sha256()
    h.update(" ".join([compiler()] + CFLAGS).encode())
    h.update(repr(variants).encode())
    for p in sorted(gen_dir.iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def build(name: str, gen_dir: Path, build_dir: Path, spec_label: str) -> Built:
    """Compile gen_dir/hz_static.c twice; skip when sources and flags are unchanged."""
    variants = {f"libhz_{name}.so": ["-DHZ_OVERRIDE=1"], f"libhz_{name}_prefixed.so": []}
    out = {lib: build_dir / lib for lib in variants}
    fp = _fingerprint(gen_dir, variants)
    stamp = build_dir / ".fingerprint"
    if stamp.exists() and stamp.read_text() == fp and all(p.exists() for p in out.values()):
        return Built(name, gen_dir, out[f"libhz_{name}.so"], out[f"libhz_{name}_prefixed.so"])
    build_dir.mkdir(parents=True, exist_ok=True)
    # no stamp while the libraries change: an interrupted build must not leave one library of
    # the new sources beside a stamp that says both are of the old ones
    stamp.unlink(missing_ok=True)
    for lib, extra in variants.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{lib}.", dir=build_dir)
        os.close(fd)
        cmd = [compiler(), *CFLAGS, *extra, "-o", tmp, str(gen_dir / "hz_static.c"), "-ldl"]
        try:
            try:
                r = subprocess.run(cmd, capture_output=True, text=True)
            except FileNotFoundError:
                raise BuildError(f"C compiler '{compiler()}' not found (set CC or install gcc)")
            if r.returncode != 0:
                raise BuildError(f"compiling {gen_dir}/ (from spec {spec_label}) failed:\n"
                                 f"{r.stderr.strip()}\ncommand: {' '.join(cmd)}")
            publish_mode(tmp, executable=True)
            os.replace(tmp, out[lib])
        except BaseException:   # a failure or Ctrl-C: no half-made library is left behind
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    stamp.write_text(fp)
    return Built(name, gen_dir, out[f"libhz_{name}.so"], out[f"libhz_{name}_prefixed.so"])


def clean(build_dir: Path) -> None:
    shutil.rmtree(build_dir, ignore_errors=True)
