#!/usr/bin/env python3
"""make bench: the collection's stacks measured against Django's own cost and the alternatives.

Converges one Debian 12 systemd container per stack with site.yml (bench/inventory: the example
project with production settings), adds wrk and the comparison stacks (bench/compare.yml), then
measures inside each container. Writes .cache/bench/results.json, docs/benchmarks/latest.md
and docs/benchmarks/latest.svg. Nothing here is part of `make test`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402
import report  # noqa: E402

STATE = ROOT / ".cache" / "bench"
INVENTORY = ROOT / "bench" / "inventory"
REPORT_DIR = ROOT / "docs" / "benchmarks"
HOSTS = {
    "nginx_uwsgi": "wsgistack-bench-nginx-uwsgi",
    "apache_daemon": "wsgistack-bench-apache-daemon",
    "apache_embedded": "wsgistack-bench-apache-embedded",
}
NAME = "mysite.localhost"
APP = "/srv/mysite"
# Processes whose memory counts as the app server's, per stack.
RSS = {
    "nginx_uwsgi": r"^mysite uWSGI",
    "apache_daemon": r"^\(wsgi:mysite\)",
    "apache_embedded": r"^/usr/sbin/apache2",
    "seed004": r"seed004-uwsgi\.ini",
    "seed000": r"^\(wsgi:seed000\)",
    "gunicorn": r"gunicorn",
    "django_static": r"django-static-uwsgi\.ini",
}
# How each stack serves plain HTTP: the web tier behind a TLS-terminating balancer.
HTTP_SITE = {
    "nginx_uwsgi": {"tls": False, "behind_https_proxy": True},
    "apache_daemon": {"tls": False, "extra_config": "SetEnv HTTPS on"},
    "apache_embedded": {"tls": False, "extra_config": "SetEnv HTTPS on"},
}

# Why a target is missed, when it is (shown next to the gap in the report). The reasons come
# from measurements on this machine kind: top during the runs, and the bisection of uWSGI and
# nginx options described in roles/nginx_uwsgi/README.md.
WHY = {
    "nginx_uwsgi /hello / LIMIT":
        "the run is CPU-bound on 2 cores shared by wrk, nginx and the workers; a request costs ~250 us of server "
        "CPU through the stack (column server CPU) against ~80 us for the handler in-process, of which nginx is "
        "~25 us (its static-file cost) and the rest is the uWSGI worker (protocol, WSGI environ, Debian's shared "
        "libpython). The options that cost throughput (max-requests respawns, reload-on-rss, unbuffered logs) "
        "are off by default; more processes than cores measured within the noise",
    "nginx_uwsgi /db / LIMIT":
        "persistent connections (conn_max_age 60) made the handler itself 2.4x faster on /db, which raised LIMIT "
        "more than the stack: the stack's fixed per-request cost (see /hello) now weighs more",
    "nginx_uwsgi / seed 004 uWSGI, /hello":
        "the seed's single worker runs on one core while nginx and wrk use the other; at the CPU limit a second "
        "worker only gets what nginx and wrk leave, so two workers gain ~1.3x, not 2x (the seed's p99 is higher)",
    "nginx_uwsgi / nginx->gunicorn, /hello":
        "gunicorn here runs with its default log level (the anchor's 4,250 req/s had debug logging on), and the "
        "same per-request CPU limit as above caps the collection's stack",
    "second converge / first converge (time)":
        "a no-op converge still verifies ~125 tasks (packages, templates, directories, services), each one "
        "round trip of ~0.23 s through the connection with pipelining on; the first converge's own work "
        "(packages, virtualenv, collectstatic) is only ~30 s with a local package mirror",
    "nginx_uwsgi static (https) / Django-served static":
        "TLS record encryption adds ~13 us per response to nginx's ~25 us for the file; over HTTP the ratio is ~10x",
    "apache_daemon static (http) / Django-served static":
        "Apache spends ~100 us of CPU per small file over HTTP (column server CPU) against nginx's ~25 us: its "
        "per-request processing (directory walk, header and log modules) is the limit, not the file",
    "apache_daemon static (https) / Django-served static":
        "Apache's per-request cost for small files (see HTTP) plus TLS records",
    "apache_embedded static (http) / Django-served static":
        "as for daemon mode: Apache's per-request processing, not the file itself",
    "apache_embedded static (https) / Django-served static":
        "as for daemon mode: Apache's per-request processing plus TLS records",
    "apache_daemon / seed 000 (2x15), /hello":
        "the two configurations differ only in threads per process; with CPU-bound views their rates are within "
        "run-to-run noise of each other (the p99 is where threads=1 wins)",
    "apache_embedded: failed requests during a deploy":
        "new code in embedded mode needs Apache's graceful restart, which closes idle keep-alive connections; a "
        "request sent on one in that instant is reset (wrk counts it; browsers retry idempotent requests). Daemon "
        "mode reloads only its own processes and lost none",
}

# Observations the tables alone do not explain.
NOTES = [
    "Apache (both modes) shows a handful of wrk read errors (server-closed keep-alive connections) in some "
    "steady-state runs at full load, 0.01-0.03 % of requests, with no error in Apache's logs; nginx shows none. "
    "They persist with unlimited keep-alive requests and with a fixed worker pool, so the cause is not found yet.",
    "Deploys under load in embedded mode reload Apache gracefully, which closes idle keep-alive connections: an "
    "earlier run lost 1 of 180,490 requests that way (a reset, which browsers retry for idempotent requests); "
    "daemon mode and uWSGI reload only the app's own processes and lost none in any run.",
    "HTTP rows are the collection's web tier as it runs behind a TLS-terminating balancer (nginx: behind_https_proxy; "
    "Apache: SetEnv HTTPS on); HTTPS rows are the single-host site. The comparison stacks are measured over HTTP.",
    "Server CPU per request is the machine's busy CPU time during the run minus wrk's own, divided by the requests; "
    "app memory is the summed resident memory of the app server's processes (uWSGI master and workers, mod_wsgi "
    "daemons, all Apache children in embedded mode, gunicorn master and workers).",
]


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


def docker(container: str, *cmd: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", "exec", container, *cmd], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise harness.HarnessError(f"{' '.join(cmd)} in {container} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def playbook(playbook_path: str, host: str, extra: dict | None = None) -> tuple[float, dict]:
    """One playbook on one bench host; its duration and summed PLAY RECAP counters."""
    args = ["--limit", host] + (["-e", json.dumps(extra)] if extra else [])
    seconds, totals = harness.converge(INVENTORY, playbook_path, ROOT, harness.tool_env(), args)
    log(f"{seconds:.1f} s, {totals}")
    return seconds, totals


def release_source(version: str) -> Path:
    """A copy of the example project whose only difference is its version marker."""
    target = STATE / "sources" / f"release-{version}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "mysite", target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "db.sqlite3"))
    (target / "mysite" / "version.py").write_text(f'"""Release marker shown on the home page."""\n\nVERSION = "{version}"\n')
    return target


def static_path(container: str) -> str:
    """A hashed static file of about 10 KB from the deployed release."""
    script = (
        "import json,os\n"
        f"root='{APP}/current/_static'\n"
        "files=json.load(open(os.path.join(root,'staticfiles.json')))['paths'].values()\n"
        "best=min(files,key=lambda f:abs(os.path.getsize(os.path.join(root,f))-10240))\n"
        "print(best, os.path.getsize(os.path.join(root,best)))\n")
    name, size = docker(container, "python3", "-c", script).split()
    return f"/static/{name}", int(size)


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = {
            "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "settings": f"wrk -t2 -c{args.connections} -d{args.seconds}s, {args.rounds} rounds",
            "limit": {},
            "measurements": {},
            "ansible": {},
            "deploy_under_load": {},
            "environment": {},
            "notes": [],
            # stack -> when its rows were measured (a --merge run replaces only its own stacks)
            "runs": {stack: "" for stack in args.stacks},
        }
        for stack in args.stacks:
            self.results["runs"][stack] = self.results["started"]
        self.static = {}
        self.source = {}  # container -> the project copy deployed there

    # ----------------------------------------------------------------------- measuring

    def wrk(self, container: str, url: str, seconds: int, rss: str = "") -> dict:
        out = docker(container, "python3", "/opt/wsgistack-bench/loadgen.py", "--url", url,
                     "--connections", str(self.args.connections), "--seconds", str(seconds), "--rss-pattern", rss)
        raw = json.loads(out)
        parsed = report.parse_wrk(raw["output"])
        parsed["cpu_us"] = report.cpu_per_request_us(raw["busy_cpu_seconds"], raw["wrk_cpu_seconds"],
                                                     parsed["requests"])
        parsed["rss_mib"] = raw["rss_mib"]
        return parsed

    def measure(self, stack: str, container: str, scheme: str, kind: str, base: str) -> None:
        path = {"hello": "/hello", "db": "/db"}.get(kind) or self.static[container][0]
        url = f"{base}{path}"
        probe = docker(container, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", url)
        if probe != "200":
            raise harness.HarnessError(f"{url} in {container} answered {probe}, not 200; nothing to measure")
        self.wrk(container, url, 2)  # warm-up
        runs = [self.wrk(container, url, self.args.seconds, RSS[stack]) for _ in range(self.args.rounds)]
        summary = report.summarize(runs)
        self.results["measurements"][f"{stack}|{scheme}|{kind}"] = summary
        log(f"{stack} {scheme} {kind}: {summary['rps']:,.0f} req/s, p99 {summary['p99_ms']} ms, "
            f"failed {summary['failed']}")
        self.save()

    def limit(self, container: str) -> None:
        out = docker(container, "runuser", "-u", "mysite", "--", f"{APP}/current/.venv/bin/python",
                     "/opt/wsgistack-bench/limit.py", "--wsgi-dir", f"{APP}/shared/wsgi", "--host", NAME,
                     "--path", "/hello", "--path", "/db", "--seconds", str(self.args.seconds),
                     "--rounds", str(self.args.rounds))
        rates = json.loads(out)
        workers = int(docker(container, "nproc").strip())
        self.results["limit"] = {
            "workers": workers,
            "single_process": {path.strip("/"): max(values) for path, values in rates.items()},
            "hello": report.statistics.median(rates["/hello"]) * workers,
            "db": report.statistics.median(rates["/db"]) * workers,
        }
        log(f"LIMIT: {self.results['limit']}")

    def deploy_under_load(self, stack: str, container: str, source: Path, version: str) -> None:
        seconds = self.args.deploy_load_seconds
        load = subprocess.Popen(
            ["docker", "exec", container, "python3", "/opt/wsgistack-bench/loadgen.py", "--url",
             f"https://{NAME}:443/hello", "--connections", "8", "--seconds", str(seconds)],
            stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        deploy_seconds, _ = playbook("playbooks/deploy.yml", container, {"wsgistack_bench_source": str(source)})
        self.source[container] = source
        out, _ = load.communicate()
        parsed = report.parse_wrk(json.loads(out)["output"])
        body = docker(container, "curl", "-sk", f"https://{NAME}/health/")
        if deploy_seconds > seconds - 5:
            self.results["notes"].append(f"{stack}: the deploy ({deploy_seconds:.0f} s) outlasted part of the load run "
                                         f"({seconds} s); raise --deploy-load-seconds")
        self.results["deploy_under_load"][stack] = {
            "requests": parsed["requests"], "failed": parsed["non2xx"] + parsed["socket_errors"],
            "deploy_seconds": deploy_seconds, "release_after": body.split()[1] if body.startswith("ok ") else body[:40],
        }
        if version not in body:
            raise harness.HarnessError(f"after deploying release {version}, {container} serves: {body[:200]}")
        log(f"deploy under load on {stack}: {self.results['deploy_under_load'][stack]}")
        self.save()

    # ----------------------------------------------------------------------- phases

    def start(self, container: str) -> None:
        harness.stop_target(container)
        harness.start_target(container)

    def ansible_cost(self, container: str) -> None:
        first, totals = playbook("site.yml", container)
        second, totals2 = playbook("site.yml", container)
        self.source[container] = release_source("2")
        deploy, totals3 = playbook("playbooks/deploy.yml", container,
                                   {"wsgistack_bench_source": str(self.source[container])})
        self.results["ansible"] = {
            "first_seconds": first, "first_changed": totals.get("changed", 0),
            "second_seconds": second, "second_changed": totals2.get("changed", 0),
            "deploy_seconds": deploy, "deploy_changed": totals3.get("changed", 0),
        }
        self.save()

    def stack(self, stack: str) -> None:
        container = HOSTS[stack]
        self.start(container)
        self.source[container] = ROOT / "examples" / "mysite"
        if stack == "nginx_uwsgi":
            self.ansible_cost(container)
        else:
            playbook("site.yml", container)
        playbook("bench/compare.yml", container)
        self.static[container] = static_path(container)
        if stack == "nginx_uwsgi":
            self.limit(container)
            self.environment(container)
        for kind in self.args.kinds:
            self.measure(stack, container, "https", kind, f"https://{NAME}:443")
        release3 = release_source("3")
        if not self.args.skip_deploy:
            self.deploy_under_load(stack, container, release3, "3")
        # Plain HTTP: the same host and release reconverged as the web tier behind a TLS balancer.
        playbook("site.yml", container, {"wsgistack_bench_source": str(self.source[container]),
                                         "wsgistack_site_options": HTTP_SITE[stack],
                                         "django_app_health_check_scheme": "http"})
        for kind in self.args.kinds:
            self.measure(stack, container, "http", kind, f"http://{NAME}:80")
        if stack == "nginx_uwsgi":
            for kind in [k for k in self.args.kinds if k != "static"]:
                self.measure("seed004", container, "http", kind, f"http://{NAME}:8001")
                self.measure("gunicorn", container, "http", kind, f"http://{NAME}:8002")
            if "static" in self.args.kinds:
                self.measure("django_static", container, "http", "static", f"http://{NAME}:8004")
        if stack == "apache_daemon":
            for kind in [k for k in self.args.kinds if k != "static"]:
                self.measure("seed000", container, "http", kind, f"http://{NAME}:8003")
            self.results["environment"]["Apache"] = docker(container, "apache2", "-v").splitlines()[0]
        if not self.args.keep:
            harness.stop_target(container)

    def environment(self, container: str) -> None:
        def first_line(*cmd):
            proc = subprocess.run(["docker", "exec", container, *cmd], capture_output=True, text=True)
            return ((proc.stdout or proc.stderr).strip().splitlines() or ["-"])[0]

        cpu = first_line("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
        mem = first_line("sh", "-c", "awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
        ansible_core = subprocess.run([harness.venv_bin("ansible"), "--version"], capture_output=True,
                                      text=True).stdout.splitlines()[0]
        self.results["environment"] = {
            "CPU": f"{first_line('nproc')} x {cpu.strip()}",
            "memory": mem,
            "kernel": first_line("uname", "-r"),
            "container OS": "Debian " + first_line("cat", "/etc/debian_version"),
            "nginx": first_line("nginx", "-v"),
            "uWSGI": first_line("uwsgi", "--version"),
            "Python": first_line(f"{APP}/current/.venv/bin/python", "--version"),
            "Django": first_line(f"{APP}/current/.venv/bin/python", "-c", "import django; print(django.get_version())"),
            "gunicorn": first_line("sh", "-c", "PYTHONPATH=/opt/wsgistack-bench/gunicorn "
                                   f"{APP}/current/.venv/bin/python -m gunicorn --version"),
            "Apache": "-",
            "wrk": first_line("sh", "-c", "wrk -v 2>&1 | head -1"),
            "controller": ansible_core,
        }

    def save(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        (STATE / "results.json").write_text(json.dumps(self.results, indent=2))


def write_report(results: dict) -> Path:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "latest.svg").write_text(report.svg_plot(results))
    path = REPORT_DIR / "latest.md"
    path.write_text(report.markdown(dict(results, notes=results.get("notes", []) + NOTES), WHY))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement; the median is kept (default 3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--stacks", nargs="*", default=list(HOSTS), choices=list(HOSTS))
    parser.add_argument("--kinds", nargs="*", default=["hello", "db", "static"], choices=["hello", "db", "static"])
    parser.add_argument("--deploy-load-seconds", type=int, default=60)
    parser.add_argument("--skip-deploy", action="store_true", help="no deploy under load")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from .cache/bench/results.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other stacks' results in .cache/bench/results.json (rerun some stacks only)")
    args = parser.parse_args(argv)

    if args.report_only:
        print(write_report(json.loads((STATE / "results.json").read_text())).read_text())
        return 0
    try:
        harness.ensure_venv()
        harness.ensure_engine()
        harness.ensure_images()
        bench = Bench(args)
        if args.merge and (STATE / "results.json").is_file():
            previous = json.loads((STATE / "results.json").read_text())
            ours = set(args.stacks)
            if "nginx_uwsgi" in ours:
                ours |= {"seed004", "gunicorn", "django_static"}
            if "apache_daemon" in ours:
                ours.add("seed000")
            bench.results["measurements"] = {key: value for key, value in previous["measurements"].items()
                                             if key.split("|")[0] not in ours}
            for key in ("limit", "ansible", "environment"):
                bench.results[key] = previous.get(key, {})
            bench.results["deploy_under_load"] = {key: value for key, value in previous["deploy_under_load"].items()
                                                  if key not in ours}
            bench.results["runs"] = dict(previous.get("runs", {}), **bench.results["runs"])
        for stack in args.stacks:
            bench.stack(stack)
        bench.save()
    except harness.HarnessError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 2
    path = write_report(bench.results)
    print(path.read_text())
    log(f"report: {path.relative_to(ROOT)} (raw results: .cache/bench/results.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
