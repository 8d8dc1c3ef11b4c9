"""tests/module_runner: the resident module runner of the test containers runs what `python3 -`
would run (here on the controller, with this Ansible's module_utils): a real module's payload,
its output and status, environment, working directory and umask, its exit steps, a signal that
ends it, a client that goes away; and the client falls back to its interpreter when no runner
of that interpreter answers. The connection's rewrite of pipelined commands."""

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
    connection = plugin()
    connection.PID_CACHE = str(where)
    digest = connection.runner_digest()
    with tarfile.open(fileobj=io.BytesIO(connection.runner_bundle(digest))) as archive:
        assert sorted(archive.getnames()) == ["client.py", "module_utils.zip", "server.py"]
        archive.extractall(where, filter="data")
    assert (where / f"module-runner-{digest}.tar").stat().st_mode & 0o077 == 0
    socket_path = str(where / "socket")
    server = subprocess.Popen([sys.executable, str(where / "server.py"), socket_path, str(where / "module_utils.zip")])
    deadline = time.monotonic() + 60
    while not os.path.exists(socket_path):
        assert server.poll() is None and time.monotonic() < deadline, "the runner did not start"
        time.sleep(0.05)
    yield {"socket": socket_path, "client": str(where / "client.py"), "dir": where}
    server.terminate()
    server.wait(timeout=10)


def python(runner, script: str, socket_path: str | None = None, interpreter: str = sys.executable,
           **kwargs) -> subprocess.CompletedProcess:
    """The script on stdin of the client, as a pipelined module is given to `python3`."""
    return subprocess.run([interpreter, "-I", "-S", runner["client"], socket_path or runner["socket"]],
                          input=script, capture_output=True, text=True, timeout=120, **kwargs)


def payload(tmp_path, module_args: str) -> str:
    """A real AnsiballZ payload of ansible.builtin.stat, as Ansible sends it."""
    remote = tmp_path / "remote"
    env = dict(os.environ, ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_PIPELINING="0", ANSIBLE_REMOTE_TMP=str(remote),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-m", "ansible.builtin.stat",
                    "-a", module_args, "-e", f"ansible_python_interpreter={sys.executable}"],
                   env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
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
              "print(os.environ['PROBE'], os.getcwd(), oct(os.umask(0)), sys.stdin.read() == '', 'PATH' in os.environ,"
              " sys.path[0] == '', __name__)\n"
              "print('on stderr', file=sys.stderr)\n"
              "sys.exit(3)\n")
    result = python(runner, script, env={"PROBE": "seen"}, cwd=tmp_path, preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 3
    assert result.stdout.split() == ["seen", str(tmp_path), "0o27", "True", "False", "True", "__main__"]
    assert result.stderr == "on stderr\n"


def test_exit_steps_run_and_statuses_are_python3s(runner, tmp_path):
    # atexit functions (a module's temporary directory goes there) and threads finish first.
    done = tmp_path / "atexit"
    script = (f"import atexit, threading, time\natexit.register(lambda: open({str(done)!r}, 'w').write('x'))\n"
              "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))).start()\n")
    result = python(runner, script)
    assert (result.returncode, result.stdout, done.read_text()) == (0, "thread done\n", "x"), result.stderr
    assert python(runner, "import os; os._exit(3)\n").returncode == 3
    assert python(runner, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n").returncode == 128 + 9
    # A forked copy of the module that exits first tells nothing: the module's own status counts.
    forked = python(runner, "import os, sys, time\nif os.fork() == 0:\n    sys.exit(5)\ntime.sleep(0.5)\nsys.exit(0)\n")
    assert forked.returncode == 0
    raised = python(runner, "raise ValueError('boom')\n")
    assert raised.returncode == 1 and "ValueError: boom" in raised.stderr and "server.py" not in raised.stderr
    message = python(runner, "import sys; sys.exit('bad things')\n")
    assert message.returncode == 1 and message.stderr.strip() == "bad things"
    # Compiled as `python3 -` compiles it: no future import of the runner's own.
    assert python(runner, "def f(x: int): pass\nprint(type(f.__annotations__['x']).__name__)\n").stdout == "type\n"


def test_a_child_process_of_the_module_is_waited_for(runner):
    # The runner ignores SIGCHLD; a module must get its own children's exit statuses back.
    result = python(runner, "import subprocess; print(subprocess.run(['sh', '-c', 'exit 7']).returncode)\n")
    assert (result.returncode, result.stdout.strip()) == (0, "7")


def test_a_stopped_client_stops_its_module(runner, tmp_path):
    mark = tmp_path / "pid"
    client = subprocess.Popen([sys.executable, "-I", "-S", runner["client"], runner["socket"]], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    client.stdin.write(f"import os, time\nopen({str(mark)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    client.stdin.close()
    deadline = time.monotonic() + 60
    while not (mark.exists() and mark.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(mark.read_text())
    client.kill()
    client.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[:1]:
        assert time.monotonic() < deadline, "the module kept running after its client was stopped"
        time.sleep(0.05)


def test_without_a_runner_of_its_interpreter_the_client_is_the_interpreter(runner, tmp_path):
    result = python(runner, "import sys; print(sys.flags.isolated, 'plain')\n", socket_path=str(tmp_path / "none"))
    assert (result.returncode, result.stdout.split()) == (0, ["0", "plain"])
    other = "/usr/bin/python3"
    if os.path.realpath(other) == os.path.realpath(sys.executable) or not os.path.exists(other):
        pytest.skip("no second interpreter here")
    result = python(runner, "import sys; print(sys.executable)\n", interpreter=other)
    assert (result.returncode, result.stdout.strip()) == (0, other)


def test_pipelined_commands_are_rewritten_and_no_other():
    connection = plugin()
    plain = "/bin/sh -c /usr/bin/python3.13"
    as_root = ("/bin/sh -c 'sudo -H -S -n  -u root /bin/sh -c '\"'\"'echo BECOME-SUCCESS-abcdef ; /usr/bin/python3.13'\"'\"''")
    as_postgres = as_root.replace("-u root", "-u postgres")
    assert connection.PIPELINED.match(plain).group(1) == "/usr/bin/python3.13"
    assert connection.PIPELINED_AS_ROOT.match(as_root).group(2) == "/usr/bin/python3.13"
    for other in (as_postgres, "/bin/sh -c 'echo ~ && sleep 0'", "/bin/sh -c '/usr/bin/python3 /tmp/x.py'",
                  "/bin/sh -c '/usr/bin/python3.13 && sleep 0; rm -rf /'"):
        assert not connection.PIPELINED.match(other) and not connection.PIPELINED_AS_ROOT.match(other), other
