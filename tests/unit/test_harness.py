"""tools/harness.py: a bad environment gets a message that says what to do."""

from __future__ import annotations

import importlib.util
import socket
import sys

import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("harness", ROOT / "tools" / "harness.py")
harness = importlib.util.module_from_spec(spec)
sys.modules["harness"] = harness
spec.loader.exec_module(harness)


def test_finds_the_newest_python_with_venv():
    version, executable = harness.find_python()
    assert version >= (3, 11)
    assert harness._probe_python(executable)[0] == version


def test_no_python_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(harness, "_candidate_pythons", lambda: ["/nonexistent/python3"])
    with pytest.raises(harness.HarnessError, match=r"No Python >= 3.11.*apt-get install python3 python3-venv"):
        harness.find_python()


def test_old_python_is_not_chosen(monkeypatch):
    monkeypatch.setattr(harness, "_candidate_pythons", lambda: ["python-old"])
    monkeypatch.setattr(harness, "_probe_python", lambda path: ((3, 9), "/usr/bin/python3.9"))
    with pytest.raises(harness.HarnessError, match="No Python >= 3.11"):
        harness.find_python()


def test_no_engine_and_not_root_says_what_to_do(monkeypatch):
    monkeypatch.setattr(harness, "_docker_answers", lambda: False)
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    with pytest.raises(harness.HarnessError, match=r"not root.*systemctl start docker.*docker` group"):
        harness.ensure_engine()


def test_running_engine_is_left_alone(monkeypatch):
    monkeypatch.setattr(harness, "_docker_answers", lambda: True)

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be installed or started when an engine answers")

    monkeypatch.setattr(harness, "apt_install", refuse)
    monkeypatch.setattr(harness.subprocess, "Popen", refuse)
    harness.ensure_engine()


def test_unreachable_mirror_names_the_variable():
    # A loopback port nobody listens on: refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(harness.HarnessError, match="WSGISTACK_DEBIAN_MIRROR"):
        harness._check_mirror(f"http://127.0.0.1:{port}/debian", "bookworm")


def test_scenarios_are_found():
    assert "supervisor" in harness.scenarios()
