"""`python3 -` for a pipelined Ansible module in a test container: hands stdin, stdout, stderr,
environment, working directory, umask and open-files limit to the resident module runner
(server.py) and exits with the module's status (128 + the signal that ended it). Without a
runner, or with a runner of another interpreter, it becomes the interpreter itself.

    python3 -I -S client.py <socket>
"""

import array
import json
import os
import resource
import socket
import struct
import sys


def main() -> None:
    interpreter = sys.executable
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(sys.argv[1])
        greeting = b""
        while not greeting.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise OSError("no greeting")
            greeting += chunk
        if greeting.decode().strip() != os.path.realpath(interpreter):
            raise OSError("a runner of another interpreter")
    except OSError:
        conn.close()
        os.execv(interpreter, [interpreter, "-"])
    umask = os.umask(0)
    os.umask(umask)
    body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "umask": umask,
                       "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}).encode()
    conn.sendmsg([struct.pack("!I", len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    conn.sendall(body)
    data = b""
    while len(data) < 4:
        chunk = conn.recv(4 - len(data))
        if not chunk:
            # The runner went away without a status.
            os._exit(255)
        data += chunk
    os._exit(struct.unpack("!i", data)[0] & 0xFF)


main()
