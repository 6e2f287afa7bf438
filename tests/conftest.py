"""Shared fixtures: every shipped spec built once per session into a temporary root
(the repository's generated/ and build/ are never touched by tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPECS = sorted((REPO / "specs").glob("*.yaml"))
SPEC_IDS = [p.stem for p in SPECS]
sys.path.insert(0, str(REPO))

from hzgen.pipeline import build_spec, load_model  # noqa: E402

API_CDEF = """
void *{p}malloc(size_t);
void {p}free(void *);
void *{p}calloc(size_t, size_t);
void *{p}realloc(void *, size_t);
void *{p}reallocarray(void *, size_t, size_t);
int {p}posix_memalign(void **, size_t, size_t);
void *{p}aligned_alloc(size_t, size_t);
void *{p}memalign(size_t, size_t);
void *{p}valloc(size_t);
void *{p}pvalloc(size_t);
size_t {p}malloc_usable_size(void *);
void {p}free_sized(void *, size_t);
void {p}free_aligned_sized(void *, size_t, size_t);
void {p}cfree(void *);
int {p}malloc_trim(size_t);
int {p}mallopt(int, int);
struct mallinfo2 {{ size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks,
                   fordblks, keepcost; }};
struct mallinfo2 {p}mallinfo2(void);
"""


class Lib:
    """The prefixed library of one spec, through cffi: lib.malloc(n) calls hz_<name>_malloc."""

    def __init__(self, built, model):
        import cffi
        self.ffi = cffi.FFI()
        self.prefix = f"hz_{built.name}_"
        self.ffi.cdef(API_CDEF.format(p=self.prefix) + "void *malloc(size_t); void free(void *);")
        self.raw = self.ffi.dlopen(str(built.prefixed))
        self.libc = self.ffi.dlopen(None)
        self.model = model
        self.built = built

    def __getattr__(self, name):
        return getattr(self.raw, self.prefix + name)


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hzroot")


_built_cache: dict = {}


def built_spec(spec_path: Path, root: Path):
    key = (spec_path, root)
    if key not in _built_cache:
        _built_cache[key] = build_spec(spec_path, root=root)
    return _built_cache[key]


@pytest.fixture(scope="session", params=SPECS, ids=SPEC_IDS)
def spec_path(request):
    return request.param


@pytest.fixture(scope="session")
def built(spec_path, build_root):
    return built_spec(spec_path, build_root)


@pytest.fixture(scope="session")
def model(spec_path):
    return load_model(spec_path)


@pytest.fixture(scope="session")
def lib(built, model):
    return Lib(built, model)


def compile_c(src: Path, out: Path, prefix_lib=None, prefix=None, defines=()) -> Path:
    """Compile a test program: plain (calls malloc) or against a prefixed library."""
    cmd = [os.environ.get("CC", "cc"), "-O2", "-g", "-pthread", "-Wall", "-Wextra", "-Werror",
           *(f"-D{d}" for d in defines), "-o", str(out), str(src)]
    if prefix_lib:
        cmd[1:1] = [f"-DHZ_PREFIX={prefix}"]
        cmd += [str(prefix_lib), f"-Wl,-rpath,{prefix_lib.parent}"]
    subprocess.run(cmd, check=True)
    return out


def preload_env(built, **extra) -> dict:
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(built.override)
    env.update(extra)
    return env
