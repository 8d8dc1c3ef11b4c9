"""Every playbook in the repository passes ansible-playbook --syntax-check."""

from __future__ import annotations

import pytest
from conftest import ROOT


def playbooks():
    found = list(ROOT.glob("*.yml")) + list(ROOT.glob("playbooks/*.yml")) + list(ROOT.glob("molecule/*/*.yml"))
    found = [p for p in found if p.name not in ("molecule.yml", "galaxy.yml", "requirements.yml")]
    return sorted(found)


def test_there_are_playbooks():
    assert playbooks(), "no playbook found"


@pytest.mark.parametrize("playbook", playbooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_syntax(playbook, ansible_run):
    result = ansible_run("ansible-playbook", "-i", "localhost,", "--syntax-check", str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr
