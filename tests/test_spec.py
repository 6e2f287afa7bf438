"""Spec loading and validation: every error is FILE:LINE:COL: message, exit 2, nothing written."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from hzgen.spec import SpecError, load_spec, geometric_sizes, parse_size

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
name: t
size_classes: {scheme: geometric, small_max: 32KiB}
tiers:
  - range: [16, 1024]
    chain: [ring, sll, superslab]
    ring: {capacity: 64}
  - range: [1025, 32768]
    chain: [sll, superslab]
"""


def write(tmp_path: Path, text: str, name="s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def errors_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_spec(path)
    return e.value.problems


def test_good_spec_fills_defaults(tmp_path):
    s = load_spec(write(tmp_path, GOOD))
    assert s.data["superslab"]["segment"] == 4 << 20
    assert s.data["remote_free"]["strategy"] == "owner_stash"
    assert s.data["tiers"][0]["ring"]["capacity"] == 64
    assert s.data["tiers"][0]["sll"]["capacity"] == 256      # default of the table
    assert s.data["size_classes"]["sizes"][-1] == 32768


# (spec text, expected line, expected column, expected words)
BAD = {
    "unknown key": (GOOD + "bogus: 1\n", 9, 1, "unknown key 'bogus'"),
    "unknown nested key": (GOOD + "superslab: {segmnt: 4MiB}\n", 9, 13, "unknown key 'segmnt' in superslab"),
    "wrong type": (GOOD + "superslab: {segment: lots}\n", 9, 22, "expected a size"),
    "out of range": (GOOD + "superslab: {segment: 512KiB}\n", 9, 22, "out of range"),
    "not a power of two": (GOOD + "superslab: {segment: 3MiB}\n", 9, 22, "power of two"),
    "ring capacity": (GOOD.replace("capacity: 64", "capacity: 48"), 6, 22, "power of two"),
    "bad choice": (GOOD + "remote_free: {strategy: magic}\n", 9, 25, "expected one of"),
    "bool type": (GOOD + "checks: {double_free: 3}\n", 9, 23, "expected true or false"),
    "remote none with threads": (GOOD + "remote_free: {strategy: none}\n", 9, 25, "single-threaded"),
    "threads false needs none": (GOOD + "threads: false\n", 9, 10, "remote_free.strategy: none"),
    "purger without delayed release": (GOOD + "backing: {release: immediate, purge_thread: true}\n",
                                       9, 45, "needs backing.release: delayed"),
    "stats printer with stats off": (GOOD + "stats: {level: off, report: always}\n", 9, 29, "nothing to print"),
    "name not an identifier": (GOOD.replace("name: t", "name: ../../etc"), 1, 7, "not a valid name"),
    "name with capitals": (GOOD.replace("name: t", "name: Big"), 1, 7, "not a valid name"),
    "ranges overlap": (GOOD.replace("[1025, 32768]", "[1000, 32768]"), 7, 12, "overlaps"),
    "ranges leave a gap": (GOOD.replace("[1025, 32768]", "[2049, 32768]"), 7, 12, "gap"),
    "range ends inside a class": (GOOD.replace("[16, 1024]", "[16, 1000]").replace("[1025,", "[1001,"),
                                  4, 12, "inside a size class"),
    "ranges stop short": (GOOD.replace("[1025, 32768]", "[1025, 16384]"), 4, 3, "must reach small_max"),
    "chain without superslab": (GOOD.replace("[sll, superslab]", "[sll]"), 8, 12, "must end with superslab"),
    "chain repeats a tier": (GOOD.replace("[sll, superslab]", "[sll, sll, superslab]"), 8, 12, "at most once"),
    "unknown tier": (GOOD.replace("[sll, superslab]", "[tcache, superslab]"), 8, 12, "unknown tier 'tcache'"),
    "tier settings not in chain": (GOOD + "    ring: {capacity: 8}\n", 9, 5, "not in the chain"),
    "batch above capacity": (GOOD.replace("ring: {capacity: 64}", "ring: {capacity: 64, refill_batch: 65}"),
                             6, 40, "exceeds the capacity"),
    "duplicate key": (GOOD + "name: again\n", 9, 1, "duplicate key 'name'"),
    "sll capacity beyond its table": (GOOD + "    sll: {capacity: 65536}\n", 9, 21, "out of range"),
    "yaml merge key": (GOOD + "base: &b {segment: 4MiB}\nsuperslab:\n  <<: *b\n", 11, 3,
                       "merge keys (<<) are not supported"),
    "missing tiers": ("name: t\n", 1, 1, "missing required key 'tiers'"),
    "explicit without sizes": (GOOD.replace("scheme: geometric", "scheme: explicit"), 2, 24, "needs `sizes`"),
    "small_max beyond a slab": (GOOD + "superslab: {slab: 4KiB, max_units: 2}\n", 2, 46, "does not fit"),
    "yaml syntax": ("name: t\ntiers: [\n", 3, 1, "YAML syntax error"),
    "not a mapping": ("- 1\n- 2\n", 1, 1, "a spec is a mapping"),
    "description with an escape sequence": (GOOD + 'description: "red \\e[31m text"\n', 9, 14,
                                            "one line of printable text"),
    "range past small_max": (GOOD.replace("[1025, 32768]", "[1025, 65536]"), 7, 12, "past small_max (32768)"),
    "run of too many sizes": (GOOD.replace("scheme: geometric, small_max: 32KiB",
                                           "scheme: explicit, sizes: [{from: 16, to: 131072, step: 16}], "
                                           "small_max: 32KiB"), 2, 42, "at most 4097 sizes"),
    "extends a directory": (GOOD + "extends: .\n", 9, 10, "extends: not a regular file '.'"),
    "name ending in a newline": (GOOD.replace("name: t", 'name: "t\\n"'), 1, 7, "not a valid name"),
    "size of 5000 digits": (GOOD + 'superslab: {segment: "' + "9" * 5000 + '"}\n', 9, 22,
                            "expected a size"),
    "size in full-width digits": (GOOD + 'superslab: {segment: "４MiB"}\n', 9, 22, "expected a size"),
    "min above small_max": (GOOD.replace("small_max: 32KiB", "min: 4096, small_max: 2048"),
                            2, 40, "min (4096) must be at most"),
    "slow_start on an sll in front of a ring": (GOOD.replace("[ring, sll, superslab]", "[sll, ring, superslab]")
                                                .replace("ring: {capacity: 64}",
                                                         "sll: {slow_start: true}"), 6, 23,
                                                "only for an sll that refills from the slabs"),
    "a control character": (GOOD + "description: x\x07y\n", 9, 15, "unacceptable character #x0007"),
    "min above linear_until": (GOOD.replace("small_max: 32KiB", "min: 1024, linear_until: 256, "
                                            "small_max: 32KiB"), 2, 40, "it is the first class"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_validation_errors_point_at_the_key(tmp_path, case):
    text, line, col, words = BAD[case]
    path = write(tmp_path, text)
    problems = errors_of(path)
    assert any(words in p for p in problems), problems
    hit = next(p for p in problems if words in p)
    where, _, _ = hit.partition(": ")
    file, l, c = where.rsplit(":", 2)
    assert file.endswith("s.yaml")
    assert (int(l), int(c)) == (line, col), hit


def test_explicit_sizes_must_increase_and_end_at_small_max(tmp_path):
    bad = GOOD.replace("scheme: geometric, small_max: 32KiB",
                       "scheme: explicit, small_max: 32KiB, sizes: [16, 64, 32, 32768]")
    assert any("must increase" in p for p in errors_of(write(tmp_path, bad)))
    bad = GOOD.replace("scheme: geometric, small_max: 32KiB",
                       "scheme: explicit, small_max: 32KiB, sizes: [16, 64, 1024, 16384]")
    assert any("must equal small_max" in p for p in errors_of(write(tmp_path, bad)))


def test_extra_sizes_join_the_geometric_table(tmp_path):
    spec = GOOD.replace("scheme: geometric, small_max: 32KiB",
                        "scheme: geometric, small_max: 32KiB, extra: [1040, {from: 2064, to: 2080, step: 16}]")
    sizes = load_spec(write(tmp_path, spec)).data["size_classes"]["sizes"]
    assert sizes == sorted(set(geometric_sizes(16, 16, 256, 4, 32768)) | {1040, 2064, 2080})
    for extra, words in (("[1000]", "multiple of the quantum"), ("[65536]", "at most small_max"),
                         ("[]", "expected a non-empty list"), ("[x]", "expected a size")):
        bad = GOOD.replace("small_max: 32KiB", f"small_max: 32KiB, extra: {extra}")
        assert any(words in p and "size_classes.extra" in p for p in errors_of(write(tmp_path, bad))), extra
    bad = GOOD.replace("scheme: geometric, small_max: 32KiB",
                       "scheme: explicit, small_max: 32KiB, sizes: [16, 32768], extra: [64]")
    assert any("only used with scheme geometric" in p for p in errors_of(write(tmp_path, bad)))
    for run in ("{from: -32, to: 0, step: 16}", "{from: 0, to: 64, step: 16}"):   # sizes from 1 up
        bad = GOOD.replace("small_max: 32KiB", f"small_max: 32KiB, extra: [{run}]")
        assert any("bad run" in p for p in errors_of(write(tmp_path, bad))), run
    # an error names the item it came from, not the position after runs were expanded
    bad = GOOD.replace("small_max: 32KiB", "small_max: 32KiB, extra: [{from: 1024, to: 1056, "
                       "step: 16}, 1000, 4096]")
    hit = next(p for p in errors_of(write(tmp_path, bad)) if "1000 must be" in p)
    line = bad.splitlines()[1]
    assert hit.split(": ")[0].endswith(f":2:{line.index('1000,') + 1}"), hit
    # the same table digests alike however it is written
    written = ("[1040]", "[1040, 1040, 256]", "[{from: 1040, to: 1040, step: 16}]")
    digests = {load_spec(write(tmp_path, GOOD.replace("small_max: 32KiB",
                                                      f"small_max: 32KiB, extra: {e}"))).digest()
               for e in written}
    assert len(digests) == 1, digests


def write_profile(path: Path, counts: dict) -> Path:
    """a workload profile (the shape `hzgen profile` writes) with these allocs per size"""
    classes = [{"size": n, "allocs": a, "frees": a, "remote_in": 0, "remote_out": 0}
               for n, a in sorted(counts.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"hzgen_profile": 1, "classes": classes}))
    return path


def test_profile_scheme_adds_the_hot_sizes_of_a_workload_profile(tmp_path):
    """`scheme: profile`: the geometric table plus a class for every size with at least 1% of
    the profile's allocations (the rule `hzgen preload` uses), the profile read relative to the
    file that names it (here a base in another directory), and part of Spec.files."""
    prof = write_profile(tmp_path / "base" / "app.yaml", {48: 500, 4368: 400, 5000: 3, 1040: 97})
    write(tmp_path / "base", GOOD.replace("scheme: geometric, small_max: 32KiB",
                                          "scheme: profile, profile: app.yaml, small_max: 32KiB"),
          "base.yaml")
    spec = load_spec(write(tmp_path, "name: child\nextends: base/base.yaml\n"))
    sizes = spec.data["size_classes"]["sizes"]
    geo = geometric_sizes(16, 16, 256, 4, 32768)
    assert sizes == sorted(set(geo) | {1040, 4368})     # 48 is a class already; 5000 is 0.3%
    assert spec.data["size_classes"]["profile_sizes"] == [1040, 4368]
    assert prof.resolve() in spec.files
    # a table that changes with the profile changes the digest
    before = spec.digest()
    write_profile(prof, {48: 500, 4368: 400, 5008: 300})
    after = load_spec(tmp_path / "s.yaml")
    assert after.data["size_classes"]["profile_sizes"] == [4368, 5008]
    assert after.digest() != before


HOSTILE_PROFILES = {
    # nine levels of ten aliases each: 10^9 values once expanded, 520 bytes on disk
    "bomb.yaml": "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i else "1"] * 10) + "]\n"
                         for i in range(9)) + "hzgen_profile: 1\nclasses: [{size: *a8}]\n",
    "deep.yaml": "hzgen_profile: 1\nclasses: " + "[" * 20000 + "]" * 20000 + "\n",
    "bigint.yaml": "hzgen_profile: 1\nclasses: [{size: 1" + "0" * 5000 + "}]\n",
    "date.yaml": "hzgen_profile: 1\ncommand: 2024-13-45\nclasses: []\n",
    "notprof.yaml": "classes: []\n",
}


@pytest.mark.parametrize("sc,words", [
    ("scheme: profile, profile: nope.yaml", "size_classes.profile: nope.yaml:1:1: no such profile file"),
    ("scheme: profile, profile: notprof.yaml", "not an hzgen profile"),
    ("scheme: profile, profile: .", "size_classes.profile: .:1:1: not a regular file"),
    ("scheme: profile, profile: bomb.yaml", "too large or too deep once its aliases are expanded"),
    ("scheme: profile, profile: deep.yaml", "the profile is nested too deeply"),
    ("scheme: profile, profile: bigint.yaml", "bigint.yaml:2:18: Exceeds the limit"),
    ("scheme: profile, profile: date.yaml", "date.yaml:2:10: month must be in 1..12"),
    ("scheme: profile", "scheme profile and `profile: FILE` go together"),
    ("scheme: geometric, profile: app.yaml", "scheme profile and `profile: FILE` go together"),
])
def test_profile_scheme_errors(tmp_path, monkeypatch, sc, words):
    """A missing, malformed or hostile profile is one FILE:LINE:COL error at the spec's
    `profile:` key, quickly, never a traceback or an exhausted machine."""
    monkeypatch.chdir(tmp_path)
    write_profile(tmp_path / "app.yaml", {48: 10})
    for name, text in HOSTILE_PROFILES.items():
        (tmp_path / name).write_text(text)
    bad = GOOD.replace("scheme: geometric, small_max: 32KiB", f"{sc}, small_max: 32KiB")
    problems = errors_of(write(tmp_path, bad))
    assert len(problems) == 1 and problems[0].startswith("s.yaml:2:"), problems
    assert words in problems[0] and len(problems[0]) < 400, problems


def test_spec_values_python_cannot_build_are_errors(tmp_path):
    """A date that is no date, or an int past Python's digit limit, in a spec: an error at its
    position (a ValueError traceback before)."""
    for value, words in (("2024-13-45", "month must be in 1..12"), ("1" + "0" * 5000, "Exceeds the limit")):
        problems = errors_of(write(tmp_path, GOOD + f"description: {value}\n"))
        assert any(words in p and ":9:14:" in p for p in problems), problems


def test_a_huge_number_is_not_repeated_whole(tmp_path):
    """A 4000-digit value (under Python's limit) is named, not echoed in a 4 KB line."""
    problems = errors_of(write(tmp_path, GOOD + "superslab: {segment: " + "9" * 4000 + "}\n"))
    assert any("out of range" in p and "(4000 chars)" in p and len(p) < 300 for p in problems), problems


def test_profile_scheme_over_an_empty_table_is_the_tables_error(tmp_path, monkeypatch):
    """`scheme: profile` with min above small_max: the geometric table's error, not a
    traceback from fitting the profile to no classes."""
    monkeypatch.chdir(tmp_path)
    write_profile(tmp_path / "app.yaml", {48: 10})
    bad = GOOD.replace("scheme: geometric, small_max: 32KiB",
                       "scheme: profile, profile: app.yaml, min: 4096, small_max: 2048")
    problems = errors_of(write(tmp_path, bad))
    assert any("must be at most" in p for p in problems), problems


def test_profile_key_that_is_not_a_path_is_one_error(tmp_path):
    write_profile(tmp_path / "app.yaml", {48: 10})
    write(tmp_path, GOOD.replace("scheme: geometric, small_max: 32KiB",
                                 "scheme: profile, profile: app.yaml, small_max: 32KiB"), "b.yaml")
    problems = errors_of(write(tmp_path, "name: c\nextends: b.yaml\nsize_classes: {profile: 123}\n"))
    assert len(problems) == 1 and "size_classes.profile: expected a string" in problems[0], problems


def test_profile_path_follows_the_file_not_the_working_directory(tmp_path, monkeypatch):
    """The profile is found beside the spec as it was opened (like `extends:`), so the same
    path gives the same table from any directory; how the path is written does not change
    the digest."""
    real, link = tmp_path / "real", tmp_path / "link"
    write_profile(real / "app.yaml", {4368: 90, 48: 10})
    write(real, GOOD.replace("scheme: geometric, small_max: 32KiB",
                             "scheme: profile, profile: app.yaml, small_max: 32KiB"))
    link.mkdir()
    (link / "s.yaml").symlink_to(real / "s.yaml")
    write_profile(link / "app.yaml", {3008: 90, 48: 10})
    seen = set()
    for cwd in (tmp_path, real, link, tmp_path / "real"):
        monkeypatch.chdir(cwd)
        seen.add(tuple(load_spec(link / "s.yaml").data["size_classes"]["profile_sizes"]))
    assert seen == {(3008,)}, seen
    digests = {load_spec(write(real, GOOD.replace("scheme: geometric, small_max: 32KiB",
                                                   f"scheme: profile, profile: {p}, small_max: 32KiB"),
                               "w.yaml")).digest()
               for p in ("app.yaml", "./app.yaml", str(real / "app.yaml"))}
    assert len(digests) == 1, digests


def test_extends_deep_merges_and_later_wins(tmp_path):
    write(tmp_path, GOOD + "superslab: {segment: 8MiB, slab: 32KiB}\n", "base.yaml")
    child = write(tmp_path, "name: child\nextends: base.yaml\nsuperslab: {slab: 128KiB}\n")
    s = load_spec(child)
    assert s.name == "child"
    assert s.data["superslab"] == {**s.data["superslab"], "segment": 8 << 20, "slab": 128 << 10}
    assert len(s.files) == 2


def test_extends_errors_point_into_the_right_file(tmp_path):
    write(tmp_path, GOOD + "superslab: {segment: 3MiB}\n", "base.yaml")
    child = write(tmp_path, "name: child\nextends: base.yaml\n")
    problems = errors_of(child)
    assert any("base.yaml:9:22" in p for p in problems), problems


def test_extends_loop_and_missing_base(tmp_path):
    write(tmp_path, "name: a\nextends: b.yaml\n", "a.yaml")
    write(tmp_path, "name: b\nextends: a.yaml\n", "b.yaml")
    assert any("loop" in p for p in errors_of(tmp_path / "a.yaml"))
    p = write(tmp_path, "name: c\nextends: nowhere.yaml\n", "c.yaml")
    assert any("c.yaml:2:10" in e and "no such spec" in e for e in errors_of(p))


def test_missing_file(tmp_path):
    assert any("no such spec file" in p for p in errors_of(tmp_path / "nope.yaml"))


def test_sizes_parse():
    assert parse_size("4MiB") == 4 << 20 and parse_size("64k") == 65536 and parse_size(17) == 17
    assert parse_size("4 parsecs") is None and parse_size(True) is None


def test_geometric_spacing():
    s = geometric_sizes(16, 16, 256, 4, 32768)
    assert s[:16] == list(range(16, 257, 16))
    assert s[16:20] == [320, 384, 448, 512]
    assert s[-1] == 32768 and all(x % 16 == 0 for x in s)


@pytest.mark.parametrize("command", ["validate", "build", "classes"])
def test_cli_errors_exit_2_without_traceback_or_output(tmp_path, command):
    bad = write(tmp_path, GOOD + "superslab: {segment: 3MiB}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "hzgen.cli", command, str(bad)]
    if command == "build":
        args += ["--root", str(tmp_path / "root")]
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "s.yaml:9:22:" in r.stderr and "power of two" in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "root").exists()


def test_shipped_specs_validate():
    for spec in sorted((REPO / "specs").glob("*.yaml")):
        load_spec(spec)
