"""Turns the benchmark's raw results into the markdown report and the SVG plot.

Pure functions only (no containers): parse wrk's output, take medians, compute the ratios
and judge the targets. bench/run.py feeds it; tests/unit/test_bench_report.py checks it.
"""

from __future__ import annotations

import html
import re
import statistics

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}

# The collection's stacks and the comparisons, in report order.
STACKS = [
    ("nginx_uwsgi", "nginx -> uWSGI (collection default)"),
    ("apache_daemon", "Apache mod_wsgi daemon (collection default)"),
    ("apache_embedded", "Apache mod_wsgi embedded (collection default)"),
    ("seed004", "seed 004 uWSGI ini (1 worker, logging on)"),
    ("seed000", "seed 000 mod_wsgi daemon processes=2 threads=15"),
    ("gunicorn", "nginx -> gunicorn, 2 * cores + 1 sync workers"),
    ("django_static", "Django-served static (uWSGI, django.views.static.serve)"),
]
COLLECTION = ("nginx_uwsgi", "apache_daemon", "apache_embedded")


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """Requests, rate, p50/p99 (ms) and failures from `wrk --latency` output."""
    result = {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None, "non2xx": 0, "socket_errors": 0}
    match = re.search(r"^\s*(\d+) requests in", output, re.M)
    if not match:
        raise ValueError("wrk printed no request count:\n" + output[-2000:])
    result["requests"] = int(match.group(1))
    match = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    result["rps"] = float(match.group(1)) if match else 0.0
    for percent, key in (("50", "p50_ms"), ("99", "p99_ms")):
        match = re.search(rf"^\s+{percent}%\s+(\S+)", output, re.M)
        if match:
            result[key] = _ms(match.group(1))
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if match:
        result["non2xx"] = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if match:
        result["socket_errors"] = sum(int(value) for value in match.groups())
    return result


def summarize(runs: list[dict]) -> dict:
    """Median of the rounds of one measurement (each: parsed wrk result + loadgen extras)."""
    def median(key):
        values = [run[key] for run in runs if run.get(key) is not None]
        return statistics.median(values) if values else None

    summary = {key: median(key) for key in ("rps", "p50_ms", "p99_ms", "cpu_us", "rss_mib")}
    summary["rounds"] = len(runs)
    summary["failed"] = sum(run["non2xx"] + run["socket_errors"] for run in runs)
    return summary


def cpu_per_request_us(busy_cpu_seconds: float, wrk_cpu_seconds: float, requests: int) -> float | None:
    """Server CPU per request: the machine's busy time minus the load generator's own."""
    if requests <= 0:
        return None
    return max(busy_cpu_seconds - wrk_cpu_seconds, 0.0) / requests * 1e6


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def _fmt(value, pattern="{:,.0f}"):
    return "-" if value is None else pattern.format(value)


def lookup(results: dict, stack: str, scheme: str, kind: str) -> dict | None:
    return results["measurements"].get(f"{stack}|{scheme}|{kind}")


# --------------------------------------------------------------------------- targets


def targets(results: dict) -> list[dict]:
    """Each target of the benchmark: what was measured, the goal, met or not, and by how much."""
    limit = results["limit"]
    out = []

    def add(name, value, goal, higher_is_better=True, unit="x"):
        if value is None:
            out.append({"name": name, "value": None, "goal": goal, "met": False, "unit": unit, "gap": None})
            return
        met = value >= goal if higher_is_better else value <= goal
        gap = (goal - value) if higher_is_better else (value - goal)
        out.append({"name": name, "value": value, "goal": goal, "met": met, "unit": unit,
                    "gap": None if met else gap, "higher": higher_is_better})

    def rps(stack, kind, scheme="http"):
        row = lookup(results, stack, scheme, kind)
        return row["rps"] if row else None

    def p99(stack, kind, scheme="http"):
        row = lookup(results, stack, scheme, kind)
        return row["p99_ms"] if row else None

    add("nginx_uwsgi /hello / LIMIT", ratio(rps("nginx_uwsgi", "hello"), limit.get("hello")), 0.55)
    add("nginx_uwsgi /db / LIMIT", ratio(rps("nginx_uwsgi", "db"), limit.get("db")), 0.70)
    add("nginx_uwsgi / seed 004 uWSGI, /hello", ratio(rps("nginx_uwsgi", "hello"), rps("seed004", "hello")), 1.6)
    add("nginx_uwsgi / nginx->gunicorn, /hello", ratio(rps("nginx_uwsgi", "hello"), rps("gunicorn", "hello")), 2.0)
    add("nginx_uwsgi p99 / seed 004 p99, /hello", ratio(p99("nginx_uwsgi", "hello"), p99("seed004", "hello")), 1.0,
        higher_is_better=False)
    add("nginx_uwsgi p99 / gunicorn p99, /hello", ratio(p99("nginx_uwsgi", "hello"), p99("gunicorn", "hello")), 1.0,
        higher_is_better=False)
    add("apache_daemon / seed 000 (2x15), /hello", ratio(rps("apache_daemon", "hello"), rps("seed000", "hello")), 1.1)
    add("apache_daemon p99 / seed 000 p99, /hello", ratio(p99("apache_daemon", "hello"), p99("seed000", "hello")),
        0.5, higher_is_better=False)
    django_static = rps("django_static", "static")
    for stack in COLLECTION:
        for scheme in ("http", "https"):
            add(f"{stack} static ({scheme}) / Django-served static", ratio(rps(stack, "static", scheme), django_static), 7.0)
    ansible = results.get("ansible", {})
    first = ansible.get("first_seconds")
    add("second converge: changed tasks", ansible.get("second_changed"), 0, higher_is_better=False, unit="")
    add("second converge / first converge (time)", ratio(ansible.get("second_seconds"), first), 0.25,
        higher_is_better=False)
    add("code-only deploy / first converge (time)", ratio(ansible.get("deploy_seconds"), first), 0.40,
        higher_is_better=False)
    for stack in COLLECTION:
        deploy = results.get("deploy_under_load", {}).get(stack)
        add(f"{stack}: failed requests during a deploy", deploy["failed"] if deploy else None, 0,
            higher_is_better=False, unit="")
    return out


# --------------------------------------------------------------------------- markdown


def _target_line(target: dict, why: dict) -> str:
    unit = target["unit"]
    goal = f"{'>=' if target.get('higher', True) else '<='} {target['goal']:g}{unit}"
    if target["value"] is None:
        return f"| {target['name']} | - | {goal} | not measured |"
    value = f"{target['value']:.2f}{unit}" if unit else f"{target['value']:g}"
    verdict = "met" if target["met"] else f"missed by {target['gap']:.2f}{unit}".rstrip()
    note = why.get(target["name"], "")
    if not target["met"] and note:
        verdict += f": {note}"
    return f"| {target['name']} | {value} | {goal} | {verdict} |"


def markdown(results: dict, why: dict | None = None, plot_name: str = "latest.svg") -> str:
    why = why or {}
    limit = results["limit"]
    env = results.get("environment", {})
    lines = [
        "# Benchmark report",
        "",
        f"Run {results.get('started', '?')} with `make bench` ({results.get('settings', '')}).",
        "All stacks ran in Debian 12 systemd containers on this machine, measured with wrk inside the",
        "container against its own loopback (no traffic leaves the machine). Medians of the rounds.",
        "",
        "LIMIT is the app's WSGI handler called in one process with the deployed settings (no server),",
        f"times {limit.get('workers')} workers (one per core): "
        f"/hello {_fmt(limit.get('hello'))} req/s, /db {_fmt(limit.get('db'))} req/s.",
        "",
        f"![requests per second and p99 latency per stack]({plot_name})",
        "",
        "## Throughput and latency",
        "",
        "| stack | scheme | page | req/s | / LIMIT | p50 ms | p99 ms | failed | server CPU us/req | app memory MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = dict(STACKS)
    for stack, _label in STACKS:
        for scheme in ("http", "https"):
            for kind in ("hello", "db", "static"):
                row = lookup(results, stack, scheme, kind)
                if not row:
                    continue
                share = ratio(row["rps"], limit.get(kind)) if kind != "static" else None
                lines.append(
                    f"| {labels[stack]} | {scheme.upper()} | {'/' + kind if kind != 'static' else 'static file'} | "
                    f"{_fmt(row['rps'])} | {_fmt(share, '{:.2f}')} | {_fmt(row['p50_ms'], '{:.1f}')} | "
                    f"{_fmt(row['p99_ms'], '{:.1f}')} | {row['failed']} | {_fmt(row['cpu_us'])} | "
                    f"{_fmt(row['rss_mib'], '{:.0f}')} |")
    lines += ["", "## Targets", "", "| target | measured | goal | result |", "|---|---|---|---|"]
    lines += [_target_line(target, why) for target in targets(results)]

    ansible = results.get("ansible", {})
    lines += [
        "",
        "## Ansible cost (nginx_uwsgi, one host)",
        "",
        "| run | seconds | changed tasks |",
        "|---|---|---|",
        f"| first converge of site.yml on a fresh container | {_fmt(ansible.get('first_seconds'), '{:.1f}')} | "
        f"{_fmt(ansible.get('first_changed'), '{:g}')} |",
        f"| second converge of site.yml | {_fmt(ansible.get('second_seconds'), '{:.1f}')} | "
        f"{_fmt(ansible.get('second_changed'), '{:g}')} |",
        f"| code-only deploy (playbooks/deploy.yml, new release) | {_fmt(ansible.get('deploy_seconds'), '{:.1f}')} | "
        f"{_fmt(ansible.get('deploy_changed'), '{:g}')} |",
        "",
        "## Deploy under load",
        "",
        "A new release deployed with playbooks/deploy.yml while wrk loaded the site's /hello over HTTPS.",
        "",
        "| stack | requests | failed (non-2xx/3xx + socket errors) | deploy seconds | release served after |",
        "|---|---|---|---|---|",
    ]
    for stack in COLLECTION:
        deploy = results.get("deploy_under_load", {}).get(stack)
        if deploy:
            lines.append(f"| {labels[stack]} | {deploy['requests']:,} | {deploy['failed']} | "
                         f"{deploy['deploy_seconds']:.1f} | {deploy['release_after']} |")
    runs = results.get("runs", {})
    if len(set(runs.values())) > 1:
        lines += ["", "Rows were measured in more than one run (`--merge`): "
                  + "; ".join(f"{stack} (and its comparisons) {when}" for stack, when in sorted(runs.items())) + "."]
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    lines += ["", "## Versions and hardware", "", "| item | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plot


def svg_plot(results: dict) -> str:
    """Two bar charts side by side: /hello req/s and p99 per stack (HTTP and HTTPS)."""
    bars = []
    labels = dict(STACKS)
    for stack, _label in STACKS:
        for scheme in ("http", "https"):
            row = lookup(results, stack, scheme, "hello")
            if row:
                bars.append((f"{labels[stack].split(' (')[0]} {scheme.upper()}", row["rps"] or 0, row["p99_ms"] or 0,
                             stack in COLLECTION))
    limit = results["limit"].get("hello") or 0
    if limit:
        bars.insert(0, ("LIMIT (in-process x workers)", limit, 0, False))
    row_h, label_w, chart_w, gap = 22, 330, 300, 60
    height = 60 + row_h * len(bars)
    width = label_w + 2 * chart_w + gap + 90
    max_rps = max((bar[1] for bar in bars), default=1) or 1
    max_p99 = max((bar[2] for bar in bars), default=1) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{label_w}" y="20" font-weight="bold">/hello requests per second</text>',
        f'<text x="{label_w + chart_w + gap}" y="20" font-weight="bold">/hello p99 latency (ms)</text>',
    ]
    for index, (label, rps, p99, ours) in enumerate(bars):
        y = 40 + index * row_h
        color = "#2b6cb0" if ours else "#a0aec0"
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{html.escape(label)}</text>')
        rps_w = chart_w * rps / max_rps
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{rps_w:.1f}" height="{row_h - 6}" fill="{color}"/>')
        out.append(f'<text x="{label_w + rps_w + 4:.1f}" y="{y + 14}">{rps:,.0f}</text>')
        if p99:
            p99_x = label_w + chart_w + gap
            p99_w = chart_w * p99 / max_p99
            out.append(f'<rect x="{p99_x}" y="{y + 3}" width="{p99_w:.1f}" height="{row_h - 6}" fill="{color}"/>')
            out.append(f'<text x="{p99_x + p99_w + 4:.1f}" y="{y + 14}">{p99:.1f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
