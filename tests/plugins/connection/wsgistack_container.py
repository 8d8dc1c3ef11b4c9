"""Connection to a local test container that enters its namespaces with nsenter.

The scenarios' playbook runs use it instead of `docker exec`: each task then costs one
fork of nsenter (about 1 ms of CPU) instead of a round trip through the Docker engine,
containerd and runc (about 30 ms), and modules go over stdin (pipelining). Commands run as
root with the container's own environment, as `docker exec` gives them.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess

from ansible.errors import AnsibleConnectionFailure
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

# Root's alone: what is cached here decides which process root enters.
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
        return super()._connect()

    def exec_command(self, cmd, in_data=None, sudoable=True):
        # Connected first: the environment comes from the container, also for the first command.
        if not self._connected:
            self._connect()
        return super().exec_command(self._container_env + cmd, in_data=in_data, sudoable=sudoable)
