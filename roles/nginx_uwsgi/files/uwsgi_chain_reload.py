"""Chain-reload a uWSGI app and wait until every worker has been replaced.

Usage: uwsgi_chain_reload.py STATS_SOCKET TOUCH_FILE TIMEOUT
Reads the worker pids from the stats socket, touches the chain-reload file, then polls until
no old pid is left and every worker is idle or busy. Exits 1 on timeout.
"""

import json
import os
import socket
import sys
import time

STATS, TOUCH, TIMEOUT = sys.argv[1], sys.argv[2], float(sys.argv[3])


def workers():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(STATS)
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    return json.loads(data)["workers"]


before = {worker["pid"] for worker in workers()}
count = len(before)
with open(TOUCH, "a"):
    os.utime(TOUCH)
deadline = time.monotonic() + TIMEOUT
pids = before
while time.monotonic() < deadline:
    time.sleep(0.2)
    try:
        now = workers()
    except (OSError, ValueError):
        continue
    pids = {worker["pid"] for worker in now}
    ready = all(
        worker["status"] in ("idle", "busy") and worker["pid"] > 0 and worker.get("accepting", 1) for worker in now
    )
    if ready and len(pids) == count and not pids & before:
        print(f"replaced {count} workers")
        sys.exit(0)
print(f"workers not replaced within {TIMEOUT:.0f} s: {sorted(before)} -> {sorted(pids)}", file=sys.stderr)
sys.exit(1)
