"""Resident module runner of the test containers (started by the wsgistack_container connection).

Each Ansible task otherwise starts a new Python that imports Ansible's module_utils again (about
0.1 s of CPU per task). This process imports them once, from a copy of the controller's own
module_utils, then serves each module in two forked processes: a handler, which tells the
client which interpreter this is, takes the client's stdin, stdout and stderr, environment,
working directory, umask and open-files limit, and reports the exit status (or the signal) of
the module's process back; and that process, which reads the module's AnsiballZ wrapper from
stdin and runs it as `python3 -` would, through the interpreter's own exit steps (threads,
atexit). Modules, and the module_utils the copy lacks, come from the module's own payload. When
the client goes away (the controller stopped the task), the module's process is terminated.

    python3 server.py <socket> <module_utils zip>
"""

import array
import atexit
import builtins
import importlib.machinery
import json
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time
import types

EXECUTABLE = os.path.realpath(sys.executable)


class PayloadFinder:
    """Finds ansible.* modules that are not loaded yet in the running module's payload (the
    zip the AnsiballZ wrapper puts first on sys.path), before the preloaded packages' paths."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if not fullname.startswith("ansible."):
            return None
        for entry in sys.path:
            if entry.endswith("_payload.zip"):
                return importlib.machinery.PathFinder.find_spec(fullname, [os.path.join(entry, *fullname.split(".")[:-1])])
        return None


def preload(modlib: str) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    # The copy first, before any ansible package of the system's Python.
    sys.path.insert(0, modlib)
    # What the AnsiballZ wrapper and nearly every module import.
    import base64  # noqa: F401
    import runpy  # noqa: F401
    import shutil  # noqa: F401
    import subprocess  # noqa: F401
    import tempfile  # noqa: F401
    import zipfile  # noqa: F401

    import ansible.module_utils._internal._ansiballz._loader  # noqa: F401
    import ansible.module_utils.basic  # noqa: F401

    # The loaded packages keep the copy in their __path__; sys.path is a new interpreter's again.
    sys.path[:] = [entry for entry in sys.path if entry not in (modlib, here)]
    sys.meta_path.insert(0, PayloadFinder)


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(4, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if len(data) < 4:
        raise EOFError("the client went away")
    (size,) = struct.unpack("!I", data)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise EOFError("the client went away")
        body += chunk
    return json.loads(body), list(fds)


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def exit_status(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def run_module(request: dict) -> None:
    """In the module's process: become the client's `python3 -`, run the wrapper, end as it would."""
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, tuple(request["nofile"]))
    except (ValueError, OSError):
        pass
    sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
    sys.argv = ["-"]
    sys.path.insert(0, "")
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    status = 0
    try:
        code = compile(read_all(0), "<stdin>", "exec", dont_inherit=True)
        exec(code, main.__dict__)  # noqa: S102 - the module, as python3 runs it
    except SystemExit as stop:
        status = exit_status(stop)
    except BaseException:  # noqa: BLE001 - reported as python3 reports it, without this frame
        kind, value, trace = sys.exc_info()
        trace = trace.tb_next or trace
        sys.excepthook(kind, value.with_traceback(trace), trace)
        status = 1
    # The interpreter's own exit: wait for the threads, then the atexit functions (the module's
    # temporary directory goes there), then the streams.
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as stop:
        status = exit_status(stop)
    except BaseException:  # noqa: BLE001
        sys.excepthook(*sys.exc_info())
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status & 0xFF)


def handle(conn: socket.socket) -> None:
    """In the handler: greet, take the request, run the module in a child, report how it ended."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn.sendall(EXECUTABLE.encode() + b"\n")
    try:
        request, fds = receive(conn)
    except (EOFError, OSError, ValueError):
        # Another interpreter was asked for: the client runs it itself.
        os._exit(0)
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.setsid()
        try:
            run_module(request)
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)

    def watch_client():
        # The client sends nothing more: an end of stream means it was stopped.
        try:
            conn.recv(1)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    threading.Thread(target=watch_client, daemon=True).start()
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        status = 128 + os.WTERMSIG(wait_status)
    else:
        status = os.WEXITSTATUS(wait_status)
    try:
        conn.sendall(struct.pack("!i", status))
    except OSError:
        pass
    os._exit(0)


def serve(path: str) -> None:
    # Handlers are reaped by the kernel; each puts the default back for its own child.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = f"{path}.{os.getpid()}"
    server.bind(partial)
    os.chmod(partial, 0o600)
    os.replace(partial, path)
    server.listen(64)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            try:
                handle(conn)
            finally:
                os._exit(1)
        conn.close()


if __name__ == "__main__":
    preload(sys.argv[2])
    serve(sys.argv[1])
