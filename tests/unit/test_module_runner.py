"""tests/module_runner: the resident module runner of the test containers runs what `python3`
would run (here on the controller, with this Ansible's module_utils): a real module's payload,
its output, status, environment, working directory and umask, and falls back to the interpreter
when no runner answers."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import ROOT

RUNNER = ROOT / "tests" / "module_runner"


def plugin():
    spec = importlib.util.spec_from_file_location(
        "wsgistack_container", ROOT / "tests" / "plugins" / "connection" / "wsgistack_container.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """A runner on a socket of its own, with the files the connection would put in a container."""
    where = tmp_path_factory.mktemp("runner")
    _, bundle = plugin().runner_bundle()
    with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
        assert sorted(archive.getnames()) == ["client.py", "module_utils.zip", "server.py"]
        archive.extractall(where, filter="data")
    socket_path = str(where / "socket")
    server = subprocess.Popen([sys.executable, str(where / "server.py"), socket_path, str(where / "module_utils.zip")])
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path):
        assert server.poll() is None and time.monotonic() < deadline, "the runner did not start"
        time.sleep(0.05)
    yield {"socket": socket_path, "client": str(where / "client.py"), "dir": where}
    server.terminate()
    server.wait(timeout=10)


def python(runner, script: str, socket_path: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The script on stdin of the client, as a pipelined module is given to `python3`."""
    return subprocess.run([sys.executable, "-I", "-S", runner["client"], socket_path or runner["socket"], sys.executable],
                          input=script, capture_output=True, text=True, timeout=60, **kwargs)


def payload(tmp_path, module_args: str) -> str:
    """A real AnsiballZ payload of ansible.builtin.stat, as Ansible sends it."""
    remote = tmp_path / "remote"
    env = dict(os.environ, ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_PIPELINING="0", ANSIBLE_REMOTE_TMP=str(remote),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-m", "ansible.builtin.stat",
                    "-a", module_args, "-e", f"ansible_python_interpreter={sys.executable}"],
                   env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    found = sorted(remote.rglob("AnsiballZ_stat.py"))
    assert found, f"no payload under {remote}"
    return found[0].read_text()


def test_a_real_module_runs_with_its_arguments_output_and_status(runner, tmp_path):
    ok = python(runner, payload(tmp_path / "ok", "path=/etc"))
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["stat"]["exists"] and result["stat"]["isdir"], result
    failed = python(runner, payload(tmp_path / "bad", "path=/etc get_checksum=maybe"))
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["failed"] is True


def test_the_module_gets_the_callers_environment_directory_umask_and_streams(runner, tmp_path):
    script = ("import os, sys\n"
              "print(os.environ['PROBE'], os.getcwd(), oct(os.umask(0)), sys.stdin.read() == '', 'PATH' in os.environ)\n"
              "print('on stderr', file=sys.stderr)\n"
              "sys.exit(3)\n")
    result = python(runner, script, env={"PROBE": "seen"}, cwd=tmp_path,
                    preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 3
    assert result.stdout.split() == ["seen", str(tmp_path), "0o27", "True", "False"]
    assert result.stderr == "on stderr\n"


def test_exceptions_and_exit_messages_end_as_python_ends_them(runner):
    raised = python(runner, "raise ValueError('boom')\n")
    assert raised.returncode == 1 and "ValueError: boom" in raised.stderr
    message = python(runner, "import sys; sys.exit('bad things')\n")
    assert message.returncode == 1 and message.stderr.strip() == "bad things"


def test_a_child_process_of_the_module_is_waited_for(runner):
    # The runner ignores SIGCHLD; a module must get its own children's exit statuses back.
    result = python(runner, "import subprocess; print(subprocess.run(['sh', '-c', 'exit 7']).returncode)\n")
    assert (result.returncode, result.stdout.strip()) == (0, "7")


def test_without_a_runner_the_client_is_the_interpreter(runner, tmp_path):
    result = python(runner, "import sys; print(sys.flags.isolated, 'plain')\n", socket_path=str(tmp_path / "none"))
    assert (result.returncode, result.stdout.split()) == (0, ["0", "plain"])
