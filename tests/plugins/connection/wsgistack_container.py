"""Connection to a local test container that enters its namespaces with nsenter.

The scenarios' playbook runs use it instead of `docker exec`: each task then costs one
fork of nsenter (about 1 ms of CPU) instead of a round trip through the Docker engine,
containerd and runc (about 30 ms), and modules go over stdin (pipelining). Commands run as
root with the container's own environment, as `docker exec` gives them.

Pipelined modules (also those run with become as root; not those become another user) go to a
resident module runner in the container (tests/module_runner), which has Ansible's module_utils
imported already and forks for each module: about 0.1 s of CPU less per task. The connection
puts the runner in place the first time it enters a container (again after the container
restarts); WSGISTACK_MODULE_RUNNER=0 turns it off, and where it cannot run, modules start their
own interpreter as before.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import stat
import subprocess
import tarfile
import zipfile
from contextlib import suppress
from pathlib import Path

import ansible
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.utils.display import Display
from ansible_collections.community.docker.plugins.connection.nsenter import Connection as NsenterConnection

DOCUMENTATION = """
name: wsgistack_container
short_description: Run tasks in a local Docker container by entering its namespaces
description:
  - Test connection of the project's scenarios; needs root on the container's host.
author: wsgistack.django maintainers
options:
  remote_addr:
    description: The container's name.
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_docker_host
"""

display = Display()

# Root's alone: what is cached here decides which process root enters (and which runner it starts).
PID_CACHE = "/run/wsgistack-containers"
CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _in_container(pid: str, container_id: str) -> bool:
    """True when pid's cgroup is the container's (/docker/<id>/... or docker-<id>.scope)."""
    cgroups = _read(f"/proc/{pid}/cgroup")
    return f"/docker/{container_id}" in cgroups or f"/docker-{container_id}.scope" in cgroups


def _is_container_init(pid: str, container_id: str) -> bool:
    """True when pid is the container's first process: in its cgroup, its parent outside."""
    if not CONTAINER_ID.match(container_id) or not pid.isdigit():
        return False
    try:
        if not _in_container(pid, container_id):
            return False
        parent = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[1]
        return not _in_container(parent, container_id)
    except (OSError, IndexError):
        return False


def _private_cache() -> None:
    """PID_CACHE as a directory of root's that nobody else can write, or an error."""
    os.makedirs(PID_CACHE, mode=0o700, exist_ok=True)
    info = os.lstat(PID_CACHE)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise AnsibleConnectionFailure(f"{PID_CACHE} must be a directory of root's with mode 0700")


def container_pid(name: str) -> str:
    """The host pid of the container's init, asked of the engine only when it changed."""
    if os.geteuid() != 0:
        raise AnsibleConnectionFailure("the wsgistack_container connection enters containers with nsenter and needs root;"
                                       " as another user set WSGISTACK_CONNECTION=community.docker.docker")
    _private_cache()
    cached = os.path.join(PID_CACHE, name)
    try:
        pid, container_id = _read(cached).split()
        if _is_container_init(pid, container_id):
            return pid
    except (OSError, ValueError):
        pass
    result = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}} {{.Id}}", name],
                            capture_output=True, text=True, check=False)
    fields = result.stdout.split()
    if result.returncode != 0 or len(fields) != 2 or fields[0] == "0":
        raise AnsibleConnectionFailure(f"container {name} is not running: {result.stderr.strip()}")
    if not _is_container_init(*fields):
        raise AnsibleConnectionFailure(f"container {name}: pid {fields[0]} is not its first process")
    partial = f"{cached}.{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(" ".join(fields))
    os.replace(partial, cached)
    return fields[0]


RUNNER_SOURCE = Path(__file__).resolve().parents[2] / "module_runner"
RUNNER_DIR = "/run/wsgistack-module-runner"
PYTHON = r"/usr/bin/python3(?:\.[0-9]+)?"
# The pipelined module commands: the interpreter alone, or become root with sudo then the interpreter.
PIPELINED = re.compile(rf"^/bin/sh -c '?({PYTHON})'?$")
PIPELINED_AS_ROOT = re.compile(
    rf"""^(/bin/sh -c 'sudo -H -S -n +-u root /bin/sh -c '"'"'echo BECOME-SUCCESS-[a-z]+ ; )({PYTHON})('"'"'')$""")
# In the container, by the digest of the runner's files: put them in place and start the runner,
# unless it runs already; then wait for its socket.
RUNNER_START = f"""set -e
umask 077
mkdir -p {RUNNER_DIR}
cd {RUNNER_DIR}
exec 9>lock
flock 9
unit=wsgistack-module-runner-$1
if [ ! -S "$1/socket" ] || ! systemctl is-active --quiet "$unit"; then
    rm -rf "$1"
    mkdir "$1"
    tar -x -f - -C "$1"
    systemctl stop "$unit" 2>/dev/null || true
    systemctl reset-failed "$unit" 2>/dev/null || true
    systemd-run --quiet --unit "$unit" --collect -p Type=exec -p KillMode=process \
        /usr/bin/python3 "$PWD/$1/server.py" "$PWD/$1/socket" "$PWD/$1/module_utils.zip"
    i=0
    while [ ! -S "$1/socket" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S "$1/socket" ]
fi
"""


def runner_digest() -> str:
    """What the runner in a container must match: its code, and this controller's module_utils
    (Ansible's version, and its files as installed)."""
    basic = Path(ansible.__file__).resolve().parent / "module_utils" / "basic.py"
    info = os.stat(basic)
    sources = b"".join((RUNNER_SOURCE / name).read_bytes() for name in ("server.py", "client.py"))
    return hashlib.sha256(f"{ansible.__version__} {basic} {info.st_mtime_ns} {info.st_size}".encode() + sources).hexdigest()[:16]


def runner_bundle(digest: str) -> bytes:
    """The runner's files for a container (its code and a zip of this controller's module_utils)
    as a tar archive, kept in root's own PID_CACHE."""
    cache = Path(PID_CACHE) / f"module-runner-{digest}.tar"
    try:
        return cache.read_bytes()
    except OSError:
        pass
    package = Path(ansible.__file__).resolve().parent
    modlib = io.BytesIO()
    with zipfile.ZipFile(modlib, "w", zipfile.ZIP_STORED) as archive:
        # As in a module's payload: ansible/ and ansible/module_utils/ are namespace-extended packages.
        extend = "from pkgutil import extend_path\n__path__=extend_path(__path__,__name__)\n"
        archive.writestr("ansible/__init__.py", extend + f"__version__={ansible.__version__!r}\n")
        for path in sorted((package / "module_utils").rglob("*.py")):
            relative = path.relative_to(package.parent).as_posix()
            archive.writestr(relative, extend if relative == "ansible/module_utils/__init__.py" else path.read_bytes())
    files = {name: (RUNNER_SOURCE / name).read_bytes() for name in ("server.py", "client.py")}
    files["module_utils.zip"] = modlib.getvalue()
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            archive.addfile(info, io.BytesIO(data))
    # A new file of our own (O_EXCL, no link followed), then in place.
    partial = f"{cache}.{os.getpid()}"
    with suppress(FileNotFoundError):
        os.unlink(partial)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bundle.getvalue())
    os.replace(partial, cache)
    return bundle.getvalue()


def container_environment(pid: str) -> list[str]:
    """The environment of the container's first process (NAME=value each), what `docker exec` gives."""
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return [item.decode() for item in handle.read().split(b"\0") if item]


class Connection(NsenterConnection):
    transport = "wsgistack_container"
    # Root needs no password prompt here, so modules can go over stdin.
    has_pipelining = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._container_env = ""
        self._runner = ""

    def get_option(self, option, hostvars=None):
        if option == "nsenter_pid":
            return self._nsenter_pid
        return super().get_option(option, hostvars)

    def _connect(self):
        if not self._connected:
            self._nsenter_pid = container_pid(self.get_option("remote_addr"))
            # The container's environment, not the controller's.
            variables = container_environment(self._nsenter_pid)
            self._container_env = " ".join(["env", "-i", *map(shlex.quote, variables)]) + " "
            super()._connect()
            if os.environ.get("WSGISTACK_MODULE_RUNNER", "1") != "0":
                self._runner = self._start_runner()
        return self

    def _start_runner(self) -> str:
        """The client of this container's module runner, after starting the runner when this
        container (since it last started) has not got this version of it; "" when the runner
        cannot run there (modules then start their own interpreter)."""
        name = self.get_option("remote_addr")
        try:
            digest = runner_digest()
            container_id = _read(os.path.join(PID_CACHE, name)).split()[1]
        except (OSError, IndexError) as exc:
            display.warning(f"module runner of {name}: {exc}; modules start their own interpreter")
            return ""
        marker = os.path.join(PID_CACHE, f"{name}.runner")
        wanted = f"{self._nsenter_pid} {container_id} {digest}"
        client = f"{RUNNER_DIR}/{digest}/client.py {RUNNER_DIR}/{digest}/socket"
        try:
            state = _read(marker)
        except OSError:
            state = ""
        if state.startswith(wanted):
            return client if state == wanted else ""
        try:
            bundle = runner_bundle(digest)
            code, _, err = super().exec_command(
                f"{self._container_env}/bin/sh -c {shlex.quote(RUNNER_START)} start {digest}", in_data=bundle, sudoable=False)
        except (OSError, AnsibleError) as exc:
            code, err = 1, str(exc).encode()
        if code != 0:
            display.warning(f"module runner of {name} did not start ({err.decode(errors='replace').strip()[-300:]});"
                            " modules start their own interpreter until the container restarts")
        partial = f"{marker}.{os.getpid()}"
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(wanted if code == 0 else f"{wanted} off")
        os.replace(partial, marker)
        return client if code == 0 else ""

    def exec_command(self, cmd, in_data=None, sudoable=True):
        # Connected first: the environment comes from the container, also for the first command.
        if not self._connected:
            self._connect()
        if self._runner and in_data is not None:
            plain, as_root = PIPELINED.match(cmd), PIPELINED_AS_ROOT.match(cmd)
            if plain:
                cmd = "/bin/sh -c " + shlex.quote(f"{plain.group(1)} -I -S {self._runner}")
            elif as_root:
                cmd = f"{as_root.group(1)}{as_root.group(2)} -I -S {self._runner}{as_root.group(3)}"
        return super().exec_command(self._container_env + cmd, in_data=in_data, sudoable=sudoable)
