"""The pipeline in one place: spec -> model -> render -> build."""
from __future__ import annotations

import os
from pathlib import Path

from .build import Built, build
from .model import Model, resolve
from .render import render, write_tree
from .spec import load_spec


def spec_ref(path: Path) -> str:
    """How the stamp names the spec: relative to the working directory when inside it."""
    try:
        return Path(os.path.relpath(path.resolve(), Path.cwd().resolve())).as_posix() \
            if path.resolve().is_relative_to(Path.cwd().resolve()) else path.resolve().as_posix()
    except ValueError:
        return path.resolve().as_posix()


def load_model(path: str | Path) -> Model:
    return resolve(load_spec(path))


def render_spec(path: str | Path) -> tuple[Model, dict[str, str]]:
    path = Path(path)
    m = load_model(path)
    return m, render(m, spec_ref(path))


def build_spec(path: str | Path, root: str | Path | None = None) -> Built:
    """Validate, render into <root>/generated/<name>/, compile into <root>/build/<name>/."""
    root = Path(root).resolve() if root else Path.cwd()   # the library's path is printed whole
    m, files = render_spec(path)
    gen = root / "generated" / m.name
    write_tree(files, gen)
    return build(m.name, gen, root / "build" / m.name, spec_ref(Path(path)))
