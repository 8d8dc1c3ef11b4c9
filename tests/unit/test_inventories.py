"""Every environment's inventory parses."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

ENVIRONMENTS = sorted(p for p in (ROOT / "inventories").glob("*") if p.is_dir()) if (ROOT / "inventories").is_dir() else []


@pytest.mark.skipif(not ENVIRONMENTS, reason="no inventories yet")
@pytest.mark.parametrize("inventory", ENVIRONMENTS, ids=lambda p: p.name)
def test_inventory_parses(inventory, ansible_run):
    result = ansible_run("ansible-inventory", "-i", str(inventory), "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["_meta"]["hostvars"], f"{inventory.name} has no hosts"
