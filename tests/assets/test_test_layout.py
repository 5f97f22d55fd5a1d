"""Test modules are imported by basename (the test directories are not
packages): two files of one name in different directories break collection
of the whole suite, which a run of one directory never shows."""
from __future__ import annotations

import collections
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    where = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if not (path.parent / "__init__.py").exists():
            where[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
