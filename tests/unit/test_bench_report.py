"""The benchmark's report: wrk parsing, medians, ratios, targets, markdown and plot."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report  # noqa: E402

WRK = """Running 10s test @ https://mysite.localhost:443/hello
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.10ms    1.20ms  30.00ms   80.00%
    Req/Sec     4.00k   300.00     5.00k    70.00%
  Latency Distribution
     50%    3.90ms
     75%    4.50ms
     90%    5.20ms
     99%    1.20s
  80123 requests in 10.00s, 15.00MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   8012.30
Transfer/sec:      1.50MB
"""


def test_parse_wrk_reads_rate_latency_and_failures():
    parsed = report.parse_wrk(WRK)
    assert parsed["requests"] == 80123
    assert parsed["rps"] == pytest.approx(8012.3)
    assert parsed["p50_ms"] == pytest.approx(3.9)
    assert parsed["p99_ms"] == pytest.approx(1200.0)  # seconds become milliseconds
    assert parsed["non2xx"] == 7
    assert parsed["socket_errors"] == 6


def test_parse_wrk_without_failures_lines_counts_none():
    output = WRK.replace("  Socket errors: connect 1, read 2, write 0, timeout 3\n", "").replace(
        "  Non-2xx or 3xx responses: 7\n", "").replace("99%    1.20s", "99%  850.00us")
    parsed = report.parse_wrk(output)
    assert parsed["non2xx"] == 0 and parsed["socket_errors"] == 0
    assert parsed["p99_ms"] == pytest.approx(0.85)


def test_parse_wrk_refuses_output_without_requests():
    with pytest.raises(ValueError, match="no request count"):
        report.parse_wrk("unable to resolve mysite.localhost:https Servname not supported")


def test_summarize_takes_medians_and_sums_failures():
    runs = [
        {"rps": 100.0, "p50_ms": 1.0, "p99_ms": 9.0, "cpu_us": 200.0, "rss_mib": 50.0, "non2xx": 1, "socket_errors": 0},
        {"rps": 300.0, "p50_ms": 3.0, "p99_ms": 3.0, "cpu_us": 100.0, "rss_mib": 70.0, "non2xx": 0, "socket_errors": 2},
        {"rps": 200.0, "p50_ms": 2.0, "p99_ms": 5.0, "cpu_us": 150.0, "rss_mib": None, "non2xx": 0, "socket_errors": 0},
    ]
    summary = report.summarize(runs)
    assert summary["rps"] == 200.0
    assert summary["p99_ms"] == 5.0
    assert summary["rss_mib"] == 60.0  # median of the rounds that measured it
    assert summary["failed"] == 3
    assert summary["rounds"] == 3


def test_cpu_per_request_subtracts_the_load_generator():
    assert report.cpu_per_request_us(3.0, 1.0, 10_000) == pytest.approx(200.0)
    assert report.cpu_per_request_us(1.0, 2.0, 10) == 0.0
    assert report.cpu_per_request_us(1.0, 0.5, 0) is None


def _row(rps, p99):
    return {"rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "cpu_us": 100.0, "rss_mib": 80.0, "failed": 0, "rounds": 3}


def _results():
    measurements = {
        "nginx_uwsgi|http|hello": _row(6000, 8.0),
        "nginx_uwsgi|http|db": _row(2800, 20.0),
        "nginx_uwsgi|https|static": _row(40000, 3.0),
        "seed004|http|hello": _row(3000, 10.0),
        "gunicorn|http|hello": _row(4000, 6.0),
        "django_static|http|static": _row(5000, 9.0),
    }
    return {
        "started": "2026-11-21 19:00 UTC", "settings": "wrk", "measurements": measurements,
        "limit": {"workers": 2, "hello": 20000.0, "db": 4000.0},
        "ansible": {"first_seconds": 100.0, "first_changed": 40, "second_seconds": 20.0, "second_changed": 0,
                    "deploy_seconds": 50.0, "deploy_changed": 12},
        "deploy_under_load": {"nginx_uwsgi": {"requests": 5000, "failed": 0, "deploy_seconds": 30.0,
                                              "release_after": "3"}},
        "environment": {"CPU": "2 x test"}, "notes": [],
    }


def test_targets_compute_ratios_and_gaps():
    by_name = {target["name"]: target for target in report.targets(_results())}
    hello = by_name["nginx_uwsgi /hello / LIMIT"]
    assert hello["value"] == pytest.approx(0.30)
    assert not hello["met"] and hello["gap"] == pytest.approx(0.25)
    assert by_name["nginx_uwsgi /db / LIMIT"]["met"]  # 0.70
    assert by_name["nginx_uwsgi / seed 004 uWSGI, /hello"]["met"]  # 2.0 >= 1.6
    gunicorn_p99 = by_name["nginx_uwsgi p99 / gunicorn p99, /hello"]
    assert not gunicorn_p99["met"] and gunicorn_p99["gap"] == pytest.approx(8.0 / 6.0 - 1.0)
    assert by_name["nginx_uwsgi static (https) / Django-served static"]["value"] == pytest.approx(8.0)
    assert by_name["second converge / first converge (time)"]["met"]  # 0.20
    assert not by_name["code-only deploy / first converge (time)"]["met"]  # 0.50
    assert by_name["nginx_uwsgi: failed requests during a deploy"]["met"]
    # Not measured is never reported as met.
    missing = by_name["apache_daemon / seed 000 (2x15), /hello"]
    assert missing["value"] is None and not missing["met"]


def test_markdown_reports_tables_gaps_and_reasons():
    text = report.markdown(_results(), {"nginx_uwsgi /hello / LIMIT": "the reason"})
    assert "| nginx -> uWSGI (collection default) | HTTP | /hello | 6,000 | 0.30 |" in text
    assert "missed by 0.25x: the reason" in text
    assert "| second converge of site.yml | 20.0 | 0 |" in text
    assert "![requests per second and p99 latency per stack](latest.svg)" in text
    assert "| CPU | 2 x test |" in text
    assert "more than one run" not in text


def test_markdown_names_the_runs_of_a_merged_report():
    results = dict(_results(), runs={"nginx_uwsgi": "19:00", "apache_daemon": "19:30"})
    text = report.markdown(results)
    assert "apache_daemon (and its comparisons) 19:30; nginx_uwsgi (and its comparisons) 19:00." in text


def test_svg_plot_has_one_bar_per_stack_and_the_limit():
    svg = report.svg_plot(_results())
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "LIMIT (in-process x workers)" in svg
    assert "nginx -&gt; uWSGI HTTP" in svg
    # background, LIMIT (no p99 bar), then a rate and a p99 bar for each of 3 stacks
    assert svg.count("<rect") == 1 + 1 + 3 * 2
