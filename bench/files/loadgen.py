"""One wrk run inside the target, plus what it cost the server.

Prints JSON: wrk's report (stdout), the CPU seconds wrk itself used, the busy CPU seconds
of the whole machine during the run (from /proc/stat; containers share the kernel) and the
summed resident memory of the processes whose command line matches --rss-pattern.
"""

import argparse
import json
import os
import re
import resource
import subprocess


def busy_seconds():
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
    return busy / os.sysconf("SC_CLK_TCK")


def rss_mib(pattern):
    if not pattern:
        return None
    regex = re.compile(pattern)
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if not cmdline or not regex.search(cmdline):
                continue
            with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return round(total / 1024, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rss-pattern", default="")
    args = parser.parse_args()

    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = busy_seconds()
    wrk = subprocess.run(
        ["wrk", "--latency", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.seconds}s",
         "--timeout", "10s", args.url],
        capture_output=True, text=True, check=False)
    busy_after = busy_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (children.ru_utime - before_children.ru_utime) + (children.ru_stime - before_children.ru_stime)
    print(json.dumps({
        "returncode": wrk.returncode,
        "output": wrk.stdout + wrk.stderr,
        "wrk_cpu_seconds": round(wrk_cpu, 3),
        "busy_cpu_seconds": round(busy_after - busy_before, 3),
        "rss_mib": rss_mib(args.rss_pattern),
    }))


if __name__ == "__main__":
    main()
