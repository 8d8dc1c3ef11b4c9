"""What the built collection holds of tests/: ansible-test's ignore files, nothing else."""

from __future__ import annotations

import yaml
from conftest import ROOT


def test_only_the_sanity_ignore_files_of_tests_ship():
    ignored = set(yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"])
    shipped = sorted(p.name for p in (ROOT / "tests").iterdir()
                     if f"tests/{p.name}" not in ignored and p.name not in {"__pycache__", ".pytest_cache"})
    assert shipped == ["sanity"]
