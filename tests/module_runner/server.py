"""Resident module runner of the test containers (started by the wsgistack_container connection).

Each Ansible task otherwise starts a new Python that imports Ansible's module_utils again (about
0.1 s of CPU per task). This process imports them once, from a copy of the controller's own
module_utils, then forks a child per module: the child takes the client's stdin, stdout and
stderr, environment, working directory and umask, reads the module's AnsiballZ wrapper from
stdin and runs it as `python3` would, and reports its exit status to the client. Modules and
the module_utils the copy lacks come from the module's own payload, as always.

    python3 server.py <socket> <module_utils zip>
"""

from __future__ import annotations

import array
import builtins
import importlib.machinery
import json
import os
import signal
import socket
import struct
import sys
import traceback
import types


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
    sys.path.append(modlib)
    # What the AnsiballZ wrapper and nearly every module import.
    import base64  # noqa: F401
    import runpy  # noqa: F401
    import shutil  # noqa: F401
    import subprocess  # noqa: F401
    import tempfile  # noqa: F401
    import zipfile  # noqa: F401

    import ansible.module_utils._internal._ansiballz._loader  # noqa: F401
    import ansible.module_utils.basic  # noqa: F401
    sys.meta_path.insert(0, PayloadFinder)


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(4, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
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


def run_module(conn: socket.socket) -> None:
    """In the forked child: become the client's `python3`, run the wrapper, report the status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    request, fds = receive(conn)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.setsid()
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
    sys.argv = [""]
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    status = 0
    try:
        exec(compile(read_all(0), "<stdin>", "exec"), main.__dict__)  # noqa: S102 - the module, as python3 runs it
    except SystemExit as stop:
        if stop.code is None:
            status = 0
        elif isinstance(stop.code, int):
            status = stop.code
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001 - reported as python3 reports it
        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    try:
        conn.sendall(struct.pack("!i", status))
    finally:
        os._exit(status & 0xFF)


def serve(path: str) -> None:
    # Children are reaped by the kernel; each child puts the default back for its own children.
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
                run_module(conn)
            finally:
                os._exit(1)
        conn.close()


if __name__ == "__main__":
    preload(sys.argv[2])
    serve(sys.argv[1])
