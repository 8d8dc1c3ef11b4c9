"""Helpers shared by the Molecule testinfra suites.

Tests run on the controller inside `molecule verify`; checks on a host go through
testinfra's ansible backend (commands run inside the container). Playbook runs use the
scenario's own inventory, so a test can re-converge with changed inputs the way a user would.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import yaml


def scenario_dir() -> Path:
    return Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


def scenario_group_vars(group: str = "molecule") -> dict:
    """The role inputs declared in the scenario's molecule.yml (a deep copy to modify)."""
    config = yaml.safe_load((scenario_dir() / "molecule.yml").read_text())
    return copy.deepcopy(config["provisioner"]["inventory"]["group_vars"][group])


def run_playbook(playbook: str, extra_vars: dict | None = None, limit: str | None = None,
                 check: bool = False) -> subprocess.CompletedProcess:
    """Run a playbook of the scenario against its instances and return the result."""
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(scenario_dir() / playbook)]
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    if limit:
        cmd += ["--limit", limit]
    if check:
        cmd += ["--check", "--diff"]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def wait_for(predicate, timeout: float, interval: float = 0.5):
    """Poll predicate until it returns a truthy value or timeout seconds pass; return the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def tree_checksums(host, path: str) -> str:
    """Checksums of every file below path on the host, to prove a failed run changed nothing."""
    return host.check_output(f"find {path} -type f -print0 | sort -z | xargs -0 sha256sum")


def journal(host, unit: str, lines: int = 60) -> str:
    return host.run(f"journalctl -u {unit} -n {lines} --no-pager").stdout
