"""Fixtures for the unit tests: paths and a runner for the venv's ansible tools."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def roles() -> list[Path]:
    return sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def ansible_run():
    """Run an ansible CLI from the checkout, as a user would (ansible.cfg at the root)."""

    def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        # The CLIs of the interpreter running the tests (the project's .venv).
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        timeout = kwargs.pop("timeout", 300)
        # In a session of its own: a run that times out is stopped with its worker processes
        # (ansible-playbook forks them), which would otherwise keep running after the test.
        with subprocess.Popen(list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, **kwargs) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    return _run
