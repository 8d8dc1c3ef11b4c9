"""`python3` for a pipelined Ansible module in a test container: hands stdin, stdout, stderr,
environment, working directory and umask to the resident module runner (server.py) and exits
with the module's status; without a runner it becomes the interpreter itself.

    python3 -I -S client.py <socket> <interpreter>
"""

import array
import json
import os
import socket
import struct
import sys


def main() -> None:
    path, interpreter = sys.argv[1], sys.argv[2]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        os.execv(interpreter, [interpreter])
    umask = os.umask(0)
    os.umask(umask)
    body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "umask": umask}).encode()
    conn.sendmsg([struct.pack("!I", len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    conn.sendall(body)
    data = b""
    while len(data) < 4:
        chunk = conn.recv(4 - len(data))
        if not chunk:
            # The module's process ended without a status (killed): as python3 killed by a signal.
            os._exit(255)
        data += chunk
    os._exit(struct.unpack("!i", data)[0] & 0xFF)


main()
