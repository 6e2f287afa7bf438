"""`pip install .` must ship the templates: build the wheel and render from the unpacked copy."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_ships_templates_and_renders_from_them(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "-q", "-w", str(tmp_path / "dist"), str(REPO)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("hzgen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("hzgen/templates/")}
    assert shipped == {p.name for p in (REPO / "templates").glob("*.j2")}
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import hzgen.render as R, hzgen.pipeline as P; "
            f"m, files = P.render_spec({str(REPO / 'specs' / 'default.yaml')!r}); "
            "print(R.templates_dir()); print(len(files))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(site)))
    assert out.returncode == 0, out.stderr[-2000:]
    where, count = out.stdout.split()
    assert where.startswith(str(site)) and int(count) >= 8
