"""What a user of the nginx_uwsgi role sees: requests through nginx -> unix socket -> uWSGI."""

from __future__ import annotations

import re
import time

import pytest
from wsgistack_testlib import (
    assert_https_site,
    assert_recap,
    assert_stored_gzip_form,
    curl,
    day_two_not_shown,
    header_values,
    headers_of,
    journal,
    molecule_host_names,
    molecule_hosts,
    output,
    recap,
    refusal_battery,
    request_loop,
    run_playbook,
    scenario_group_vars,
    start_request_loop,
    status_of,
    stop_request_loop,
    wait_for,
)

testinfra_hosts = molecule_host_names()

APPS = {"hello": "supervisor", "hello2": "systemd"}
HTTPS = "--resolve hello.test:443:127.0.0.1 https://hello.test"


def master_pid(host, app: str) -> int | None:
    if APPS[app] == "systemd":
        pid = host.run(f"systemctl show -p MainPID --value uwsgi-{app}").stdout.strip()
    else:
        result = host.run(f"supervisorctl status uwsgi-{app}")
        pid = re.search(r"RUNNING\s+pid (\d+)", result.stdout)
        pid = pid.group(1) if pid else "0"
    return int(pid) if pid and pid != "0" else None


def process_args(host, pid: int) -> str:
    """The process's command line (uWSGI shows its procname there), or "" when no process has this pid."""
    return host.run(f"ps -o args= -p {pid}").stdout.strip()


def is_uwsgi_master(host, app: str, pid: int | None) -> bool:
    return bool(pid) and process_args(host, pid) == f"{app} uWSGI master"


def worker_pids(host, app: str, master: int | None = None) -> set[int]:
    """The app's uWSGI workers: every one, or the children of `master`."""
    lines = host.check_output("ps -eo pid=,ppid=,args=").splitlines()
    return {int(pid) for pid, ppid, args in (line.split(None, 2) for line in lines)
            if args.startswith(f"{app} uWSGI worker") and (master is None or int(ppid) == master)}


def nginx_master(host) -> int:
    pid = int(host.check_output("systemctl show -p MainPID --value nginx"))
    assert pid and process_args(host, pid).startswith("nginx: master process"), pid
    return pid


def nginx_workers(host) -> set[int]:
    lines = host.check_output("ps -eo pid=,args=").splitlines()
    return {int(line.split()[0]) for line in lines if "nginx: worker process" in line}


def body_of(host, app: str, path: str = "/") -> str:
    args = f"{HTTPS}{path}" if app == "hello" else f"-H 'Host: hello2.test' http://127.0.0.1{path}"
    return curl(host, args)


def serving(host, app: str) -> bool:
    args = f"{HTTPS}/" if app == "hello" else "-H 'Host: hello2.test' http://127.0.0.1/"
    return status_of(host, args) == "200"


def test_nginx_running_and_config_valid(host):
    assert host.service("nginx").is_running
    assert host.service("nginx").is_enabled
    result = host.run("nginx -t")
    assert result.rc == 0, result.stderr


@pytest.mark.parametrize("app", APPS)
def test_socket_owner_group_and_mode(host, app):
    sock = host.file(f"/run/{app}/uwsgi.sock")
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == (app, "www-data", 0o660)
    assert host.file(f"/run/{app}").mode == 0o750


@pytest.mark.parametrize("app", APPS)
def test_uwsgi_runs_as_app_user(host, app):
    assert wait_for(lambda: master_pid(host, app), timeout=20), journal(host, f"uwsgi-{app}")
    lines = host.check_output("ps -eo user:20,args").splitlines()
    mine = [line.split()[0] for line in lines if f"{app} uWSGI" in line]
    assert len(mine) >= 3 and set(mine) == {app}, lines  # master + 2 workers


@pytest.mark.parametrize("app", APPS)
def test_app_answers_through_nginx(host, app):
    assert wait_for(lambda: serving(host, app), timeout=20), journal(host, "nginx")


def test_http_site_body_comes_from_the_app(host):
    assert curl(host, "-H 'Host: hello2.test' http://127.0.0.1/ping").startswith("app:/ping::")


def test_https_site_passes_environment_verbatim(host):
    assert curl(host, f"{HTTPS}/ping").startswith("app:/ping:hi 100%:")


def test_https_redirect_headers_and_tls_versions(host):
    assert_https_site(host, "hello.test")


def test_acme_challenge_served_on_port_80(host):
    args = "-H 'Host: www.hello.test' http://127.0.0.1/.well-known/acme-challenge/token-123"
    assert status_of(host, args) == "200"
    assert curl(host, args) == "token-123.thumbprint\n"


def test_server_header_has_no_version(host):
    for args in (f"{HTTPS}/", "-H 'Host: hello2.test' http://127.0.0.1/"):
        assert header_values(headers_of(host, args), "server") == ["nginx"]


def test_unknown_host_gets_no_response(host):
    # curl exit 52: the server closed the connection without a reply (444).
    assert host.run("curl -s --max-time 10 -H 'Host: unknown.test' http://127.0.0.1/").rc == 52
    assert host.run("curl -sk --max-time 10 --resolve unknown.test:443:127.0.0.1 https://unknown.test/").rc != 0


def test_static_file_served_by_nginx(host):
    body = curl(host, f"{HTTPS}/static/site.css")
    assert body == "body { color: #123456; }\n"
    headers = headers_of(host, f"{HTTPS}/static/site.css")
    # Revalidated on every use; a hashed name is kept for a year, the site's headers still sent.
    assert header_values(headers, "cache-control") == ["no-cache"]
    assert "content-type: text/css" in headers
    hashed = headers_of(host, f"{HTTPS}/static/site.0123456789ab.css")
    assert header_values(hashed, "cache-control") == ["public, max-age=31536000, immutable"]
    page_hsts = header_values(headers_of(host, f"{HTTPS}/"), "strict-transport-security")
    assert page_hsts and header_values(hashed, "strict-transport-security") == page_hsts
    assert header_values(hashed, "expires") == []
    assert curl(host, f"{HTTPS}/static/site.0123456789ab.css") == "body { color: #123456; }\n"
    # The form compressed beside the file (other content here, prepare.yml).
    assert_stored_gzip_form(host, f"{HTTPS}/static/site.css", "body { color: #abcdef; }\n", "no-cache")


def test_managed_headers(host):
    for path in ("/etc/nginx/nginx.conf", "/etc/nginx/sites-available/hello.conf",
                 "/etc/nginx/conf.d/default-server.conf", "/etc/uwsgi/apps/hello.ini",
                 "/etc/systemd/system/uwsgi-hello2.service"):
        assert "Ansible managed" in host.file(path).content_string, path
    ini = host.file("/etc/uwsgi/apps/hello.ini")
    assert (ini.user, ini.group, ini.mode) == ("root", "hello", 0o640)
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_self_signed_key_is_private(host):
    key = host.file("/etc/ssl/nginx-uwsgi/hello.key")
    assert (key.user, key.mode) == ("root", 0o600)


@pytest.mark.parametrize("app", APPS)
def test_touch_reload_under_load_loses_no_request(host, app):
    assert wait_for(lambda: serving(host, app), timeout=20)
    master = master_pid(host, app)
    if app == "hello":
        report = request_loop(host, "hello.test", count=2000, trigger_after=300,
                              action=f"touch /run/{app}/reload", port=443, tls=True, spread=8)
    else:
        # uWSGI's master looks at its touch files every few seconds; a fast loop could end first.
        report = request_loop(host, "hello2.test", count=2000, trigger_after=300, action=f"touch /run/{app}/reload",
                              spread=8)
    assert report["failures"] == 0, report
    assert report["requests"] == 2000, report
    # The workers were replaced (new pids answered), the master stayed.
    assert set(report["pids_after"]) - set(report["pids_before"]), report
    assert master_pid(host, app) == master


@pytest.mark.parametrize("app", APPS)
def test_killed_master_comes_back(host, app):
    old = wait_for(lambda: master_pid(host, app), timeout=20)
    assert is_uwsgi_master(host, app, old), (old, process_args(host, old) if old else None)
    host.check_output(f"kill -KILL {old}")
    new = wait_for(lambda: (pid := master_pid(host, app)) and pid != old and pid, timeout=20)
    assert new and new != old
    assert wait_for(lambda: is_uwsgi_master(host, app, new), timeout=10), process_args(host, new)
    assert process_args(host, old) != f"{app} uWSGI master", "the killed master is still running"
    assert wait_for(lambda: serving(host, app), timeout=20), journal(host, f"uwsgi-{app}")




def orphaned_workers(host, app: str) -> set[int]:
    """Workers of the app whose master is gone (init adopted them)."""
    lines = host.check_output("ps -eo pid=,ppid=,args=").splitlines()
    return {int(pid) for pid, ppid, args in (line.split(None, 2) for line in lines)
            if ppid == "1" and args.startswith(f"{app} uWSGI worker")}


@pytest.mark.parametrize("app", APPS)
def test_killed_master_leaves_no_worker_behind(host, app):
    master = wait_for(lambda: master_pid(host, app), timeout=20)
    assert is_uwsgi_master(host, app, master), master
    assert wait_for(lambda: len(worker_pids(host, app, master)) == 2, timeout=30), worker_pids(host, app)
    workers = worker_pids(host, app, master)
    host.check_output(f"kill -KILL {master}")
    new = wait_for(lambda: (pid := master_pid(host, app)) and pid != master and pid, timeout=20)
    # A new master names itself once it has read its ini.
    assert wait_for(lambda: is_uwsgi_master(host, app, new), timeout=10), process_args(host, new)
    assert wait_for(lambda: serving(host, app), timeout=20), journal(host, f"uwsgi-{app}")
    wait_for(lambda: not (worker_pids(host, app) & workers), timeout=20)
    survivors = worker_pids(host, app) & workers
    orphans = orphaned_workers(host, app)
    # Leftovers of this test and of test_killed_master_comes_back must not burn CPU during
    # the tests after this one.
    if orphans:
        host.run("kill -KILL " + " ".join(map(str, orphans)))
    assert not (survivors or orphans), f"workers of a killed master still run: {sorted(survivors | orphans)}"


def test_killed_nginx_master_is_serving_again_within_10_seconds(host):
    """systemd restarts nginx (the role's Restart= drop-in; Debian's unit has none)."""
    assert host.file("/etc/systemd/system/nginx.service.d/restart.conf").contains("^Restart=on-failure")
    assert host.check_output("systemctl show -p Restart --value nginx") == "on-failure"
    old = nginx_master(host)
    assert curl(host, f"{HTTPS}/").startswith("app:/:")
    host.check_output(f"kill -KILL {old}")
    started = time.monotonic()
    back = wait_for(lambda: serving(host, "hello") and serving(host, "hello2"), timeout=10, interval=0.2)
    elapsed = time.monotonic() - started
    assert back and elapsed <= 10, (elapsed, journal(host, "nginx"))
    assert nginx_master(host) != old
    assert host.check_output("systemctl is-active nginx") == "active"


NEW_NAME = "reload.hello2.test"
NEW_NAME_ARGS = f"-H 'Host: {NEW_NAME}' http://127.0.0.1/"


def app_state(host, app: str) -> dict:
    """The app's uWSGI master, that master's workers and the page it serves now."""
    master = master_pid(host, app)
    return {"master": master, "is_master": is_uwsgi_master(host, app, master),
            "workers": worker_pids(host, app, master), "body": body_of(host, app)}


def settled(host, app: str, body: str, workers: int, old_workers: set) -> dict | None:
    """The app's state when it serves `body` with `workers` workers, none of them one of
    `old_workers`; None otherwise."""
    state = app_state(host, app)
    done = state["body"].startswith(body) and len(state["workers"]) == workers and not state["workers"] & old_workers
    return state if done else None


def worker_connections(host) -> int:
    """worker_connections in the configuration nginx -T reads: what new workers get on a reload."""
    return int(host.check_output("nginx -T 2>/dev/null | sed -n 's/^ *worker_connections \\([0-9]*\\);/\\1/p' | head -1"))


# Day two: more inputs the same converge changes, each with what shows it on the host (in
# the configuration nginx and uWSGI read, or in a response) and what showed before.
CIPHERS = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
DAY_TWO_GLOBALS = {"nginx_uwsgi_keepalive_timeout": 30, "nginx_uwsgi_client_body_timeout": 20,
                   "nginx_uwsgi_send_timeout": 25, "nginx_uwsgi_gzip": False, "nginx_uwsgi_static_precompressed": False,
                   "nginx_uwsgi_tls_curves": "X25519:secp384r1",
                   "nginx_uwsgi_http_extra_config": "map_hash_bucket_size 128;",
                   "nginx_uwsgi_access_log_buffer": "32k", "nginx_uwsgi_access_log_flush": "10s",
                   "nginx_uwsgi_tls_protocols": ["TLSv1.3"], "nginx_uwsgi_tls_ciphers": CIPHERS}
DAY_TWO_SITE = {"client_max_body_size": "2m", "static_expires": "7d", "hsts_max_age": 600, "hsts_include_subdomains": False,
                "security_headers": False, "uwsgi_read_timeout": 30, "uwsgi_connect_timeout": 3, "uwsgi_send_timeout": 45,
                # IPv4 only, on the wildcard address hello2 shares (a site on a given address takes
                # every request to that address and port from the sites on the wildcard); the
                # request loops come from 127.0.0.1: they keep being admitted.
                "listen_addresses": ["0.0.0.0"], "allow": ["127.0.0.1", "10.99.0.0/16"]}
DAY_TWO_APP = {"harakiri": 30, "max_requests": 500, "buffer_size": 16384}
DAY_TWO_SHOWN = {  # input: (where it shows, shown before and after the restore, shown while changed)
    "nginx_uwsgi_keepalive_timeout": ("nginx", "keepalive_timeout 65;", "keepalive_timeout 30;"),
    "nginx_uwsgi_client_body_timeout": ("nginx", "client_body_timeout 30;", "client_body_timeout 20;"),
    "nginx_uwsgi_send_timeout": ("nginx", "\n    send_timeout 30;", "\n    send_timeout 25;"),
    "nginx_uwsgi_gzip": ("nginx", "gzip on;", "gzip: none"),
    # site.css.gz holds other content than site.css (prepare.yml): a client that accepts gzip gets it.
    "nginx_uwsgi_static_precompressed": ("static_gzip", "#abcdef", "#123456"),
    "nginx_uwsgi_tls_curves": ("nginx", "ssl_ecdh_curve X25519:prime256v1:secp384r1;", "ssl_ecdh_curve X25519:secp384r1;"),
    "nginx_uwsgi_http_extra_config": ("nginx", "extra: none", "map_hash_bucket_size 128;"),
    "nginx_uwsgi_access_log_buffer": ("site", " buffer=64k ", " buffer=32k "),
    "nginx_uwsgi_access_log_flush": ("site", " flush=5s;", " flush=10s;"),
    "nginx_uwsgi_tls_protocols": ("nginx", "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1.3;"),
    "nginx_uwsgi_tls_ciphers": ("nginx", "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:", f"ssl_ciphers {CIPHERS};"),
    "client_max_body_size": ("site", "client_max_body_size 10m;", "client_max_body_size 2m;"),
    "static_expires": ("static", "cache-control: no-cache", "cache-control: max-age=604800"),
    "hsts_max_age": ("page", "strict-transport-security: max-age=63072000", "strict-transport-security: max-age=600"),
    "hsts_include_subdomains": ("page", "; includesubdomains", "strict-transport-security: max-age=600\r"),
    "security_headers": ("page", "x-content-type-options: nosniff", "security headers: none"),
    "uwsgi_read_timeout": ("site", "uwsgi_read_timeout 60s;", "uwsgi_read_timeout 30s;"),
    "uwsgi_connect_timeout": ("site", "uwsgi_connect_timeout 5s;", "uwsgi_connect_timeout 3s;"),
    "uwsgi_send_timeout": ("site", "uwsgi_send_timeout 60s;", "uwsgi_send_timeout 45s;"),
    "listen_addresses": ("site", "\n    listen 443 ssl", "\n    listen 0.0.0.0:443 ssl"),
    "allow": ("site", "allow: none", "    allow 127.0.0.1;\n    allow 10.99.0.0/16;\n    deny all;"),
    "harakiri": ("ini", "harakiri = 60", "harakiri = 30"),
    "max_requests": ("ini", "max-requests: none", "max-requests = 500"),
    "buffer_size": ("ini", "buffer-size = 32768", "buffer-size = 16384"),
}


def rendered(host) -> dict[str, str]:
    """Where each day-two input shows: the nginx.conf nginx reads (nginx -T), hello's site and
    uWSGI files, and the headers of hello's page and of one of its static files."""
    nginx = host.check_output("nginx -T 2>/dev/null").split("# configuration file ")
    main = next(part for part in nginx if part.startswith("/etc/nginx/nginx.conf:"))
    ini = host.file("/etc/uwsgi/apps/hello.ini").content_string
    page = headers_of(host, f"{HTTPS}/")
    site = host.file("/etc/nginx/sites-available/hello.conf").content_string
    absent = {"max-requests": "max-requests: none"}
    return {"nginx": "\n".join([main, "" if "gzip on;" in main else "gzip: none",
                                "" if "map_hash_bucket_size" in main else "extra: none"]),
            "site": site + ("" if "deny all;" in site else "\nallow: none"),
            "ini": "\n".join([ini, *(shown for option, shown in absent.items() if option not in ini)]),
            "page": page + ("" if "x-content-type-options" in page else "\nsecurity headers: none"),
            "static": headers_of(host, f"{HTTPS}/static/site.css"),
            "static_gzip": curl(host, f"--compressed -H 'Accept-Encoding: gzip' {HTTPS}/static/site.css")}


def test_every_day_two_input_shows_and_goes_back(day_two):
    """Each input of DAY_TWO_SHOWN, changed on the converged host: the new value is what nginx,
    uWSGI or the response shows; the restore shows the old one again."""
    before, after, back = (day_two[key]["rendered"] for key in ("nginx", "nginx_after", "nginx_back"))
    wrong = day_two_not_shown(DAY_TWO_SHOWN, before, after, back)
    assert not wrong, wrong


@pytest.fixture(scope="module")
def day_two():
    """One converge that changes every kind of input at once, then one that restores the
    scenario's, each while a request loop runs against each app:
    - hello: its only environment variable removed, 3 processes instead of 2;
    - hello2: an environment variable added, 3 processes;
    - the hello2 site: one more server name;
    - nginx.conf: 768 worker connections instead of 1024 (a file the sites' relative
      includes are tested with).
    The restore adds hello's variable back and removes hello2's. What each step leaves is
    recorded here; the tests below assert it."""
    host = molecule_hosts()[0]
    hostname = host.backend.get_hostname()
    before = {}
    for app in APPS:
        assert wait_for(lambda a=app: serving(host, a), timeout=20), journal(host, f"uwsgi-{app}")
        # This master's children: a killed master's workers may linger (test_killed_master_leaves_no_worker_behind).
        assert wait_for(lambda a=app: len(worker_pids(host, a, master_pid(host, a))) == 2, timeout=30)
        before[app] = app_state(host, app)
    nginx = {"master": nginx_master(host), "workers": nginx_workers(host),
             "new_name_rc": host.run(f"curl -s --max-time 10 {NEW_NAME_ARGS}").rc,
             "worker_connections": worker_connections(host), "rendered": rendered(host)}
    inputs = scenario_group_vars()
    apps = {entry["name"]: entry for entry in inputs["nginx_uwsgi_apps"]}
    apps["hello"].update(environment={}, processes=3)
    apps["hello2"].update(environment={"APP_GREETING": "reloaded 100%"}, processes=3)
    inputs["nginx_uwsgi_sites"][1]["server_names"].append(NEW_NAME)
    inputs["nginx_uwsgi_worker_connections"] = 768
    inputs.update(DAY_TWO_GLOBALS)
    inputs["nginx_uwsgi_sites"][0].update(DAY_TWO_SITE)
    apps["hello"].update(DAY_TWO_APP)
    expected = {"hello": "app:/::", "hello2": "app:/:reloaded 100%:"}
    start_request_loop(host, "hello.test", port=443, tls=True, loop="hello")
    start_request_loop(host, "hello2.test", loop="hello2")
    after, reports = {}, {}
    try:
        changed = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
        # uWSGI looks at its ini every few seconds; the reload is over once every worker is new.
        # The state is the one seen then: with max_requests, a worker may be respawning a moment later.
        for app in APPS:
            after[app] = wait_for(lambda a=app: settled(host, a, expected[a], 3, before[a]["workers"]),
                                  timeout=60) or app_state(host, app)
        wait_for(lambda: status_of(host, NEW_NAME_ARGS) == "200", timeout=10)
        nginx_after = {"master": nginx_master(host), "workers": nginx_workers(host),
                       "new_name_status": status_of(host, NEW_NAME_ARGS),
                       "new_name_body": curl(host, f"-H 'Host: {NEW_NAME}' http://127.0.0.1/ping"),
                       "worker_connections": worker_connections(host), "rendered": rendered(host)}
    finally:
        for app in APPS:
            reports[app] = stop_request_loop(host, loop=app)
        restored = run_playbook("converge.yml", limit=hostname)
    expected = {"hello": "app:/:hi 100%:", "hello2": "app:/::"}
    back = {}
    for app in APPS:
        back[app] = wait_for(lambda a=app: settled(host, a, expected[a], 2, after[a]["workers"]),
                             timeout=60) or app_state(host, app)
    wait_for(lambda: host.run(f"curl -s --max-time 10 {NEW_NAME_ARGS}").rc == 52, timeout=10)
    nginx_back = {"master": nginx_master(host), "new_name_rc": host.run(f"curl -s --max-time 10 {NEW_NAME_ARGS}").rc,
                  "worker_connections": worker_connections(host), "rendered": rendered(host)}
    return {"before": before, "after": after, "back": back, "reports": reports, "changed": changed,
            "restored": restored, "nginx": nginx, "nginx_after": nginx_after, "nginx_back": nginx_back}


def test_site_change_reloads_nginx_without_restart(day_two):
    """A converge that changes a site applies it with a reload: same nginx master, new workers."""
    nginx, after, back = day_two["nginx"], day_two["nginx_after"], day_two["nginx_back"]
    assert nginx["workers"], "nginx has no worker processes"
    # Not a name of any site yet: the default server closes the connection (curl exit 52).
    assert nginx["new_name_rc"] == 52
    assert day_two["changed"].returncode == 0, output(day_two["changed"])
    assert after["new_name_status"] == "200", after
    # hello2's app answers it, with the environment the same converge gave it.
    assert after["new_name_body"].startswith("app:/ping:reloaded 100%:"), after
    assert after["master"] == nginx["master"], "nginx was restarted instead of reloaded"
    # nginx.conf changed on a host with sites (and the reload above gave nginx new workers).
    assert (nginx["worker_connections"], after["worker_connections"], back["worker_connections"]) == (1024, 768, 1024)
    assert not after["workers"] & nginx["workers"], "the old nginx workers still serve"
    assert day_two["restored"].returncode == 0, output(day_two["restored"])
    assert back["new_name_rc"] == 52, back
    assert back["master"] == nginx["master"]


@pytest.mark.parametrize("app", APPS)
def test_changed_ini_reloads_the_app_gracefully(day_two, app):
    """New environment and process count in the app's inputs: the same uWSGI master, new
    workers with the new values, and every request during the converge answered."""
    before, after, back = day_two["before"][app], day_two["after"][app], day_two["back"][app]
    report = day_two["reports"][app]
    assert before["is_master"], before
    assert before["body"].startswith("app:/:hi 100%:" if app == "hello" else "app:/::"), before
    assert day_two["changed"].returncode == 0, output(day_two["changed"])
    assert after["body"].startswith("app:/::" if app == "hello" else "app:/:reloaded 100%:"), after
    assert len(after["workers"]) == 3, after
    assert report["failures"] == 0, report
    assert len(report["batches"]) >= 3 and report["requests"] >= 300, report
    assert not set(report["batches"][-1]) & {str(pid) for pid in before["workers"]}, report
    assert after["master"] == before["master"], "the uWSGI master was restarted instead of reloaded"
    assert not after["workers"] & before["workers"], "old workers are still running"
    assert day_two["restored"].returncode == 0, output(day_two["restored"])
    assert len(back["workers"]) == 2, back
    assert back["master"] == before["master"]
    # The restore brought the scenario's environment back with the reload.
    assert back["body"].startswith("app:/:hi 100%:" if app == "hello" else "app:/::"), back
    assert not back["workers"] & after["workers"], "the changed workers are still running"


def test_removed_environment_variable_leaves_the_app(day_two):
    """Every change of an app's inputs reaches the app through the ini reload, a removed
    environment variable too (README: a changed ini reloads the app gracefully): hello's
    variable removed by the change, hello2's by the restore."""
    after, back = day_two["after"], day_two["back"]
    assert day_two["changed"].returncode == 0, output(day_two["changed"])
    assert day_two["before"]["hello"]["body"].startswith("app:/:hi 100%:")
    assert after["hello"]["body"].startswith("app:/::"), f"APP_GREETING still set after its removal: {after['hello']}"
    assert after["hello2"]["body"].startswith("app:/:reloaded 100%:"), after["hello2"]
    assert day_two["restored"].returncode == 0, output(day_two["restored"])
    assert back["hello"]["body"].startswith("app:/:hi 100%:"), back["hello"]
    assert back["hello2"]["body"].startswith("app:/::"), f"APP_GREETING still set after its removal: {back['hello2']}"


def test_broken_extra_config_keeps_previous_site(host):
    site = "/etc/nginx/sites-available/hello2.conf"
    before = host.file(site).sha256sum
    inputs = scenario_group_vars()
    inputs["nginx_uwsgi_sites"][1]["extra_config"] = "this_is_not_a_directive on;"
    result = run_playbook("converge.yml", extra_vars=inputs, limit=host.backend.get_hostname())
    text = output(result)
    assert result.returncode != 0, text
    assert 'unknown directive "this_is_not_a_directive"' in text, text
    assert "previous files are back in place" in text, text
    assert host.file(site).sha256sum == before
    assert host.run("nginx -t").rc == 0
    assert serving(host, "hello2")
    # No backup files are left where nginx would read them.
    listing = host.check_output("find /etc/nginx/conf.d /etc/nginx/sites-enabled -mindepth 1 -printf '%f\\n' | sort")
    assert listing.split() == ["default-server.conf", "hello.conf", "hello2.conf"]


def test_new_broken_site_is_removed(host):
    inputs = scenario_group_vars()
    inputs["nginx_uwsgi_sites"].append(
        {"name": "broken", "server_names": ["broken.test"], "app": "hello2", "extra_config": "bogus;"})
    result = run_playbook("converge.yml", extra_vars=inputs, limit=host.backend.get_hostname())
    assert result.returncode != 0, output(result)
    assert not host.file("/etc/nginx/sites-available/broken.conf").exists
    assert not host.file("/etc/nginx/sites-enabled/broken.conf").exists
    assert serving(host, "hello") and serving(host, "hello2")


def _with(key: str, index: int, **changes) -> dict:
    inputs = scenario_group_vars()
    inputs[key][index].update(changes)
    return {key: inputs[key]}


def managed_by(host, app: str) -> dict:
    """How the app runs now: its systemd unit's state, its supervisor program's status line,
    how many masters it has, and whether its site answers."""
    program = host.run(f"supervisorctl status uwsgi-{app}").stdout.strip()
    return {"unit": host.run(f"systemctl is-active uwsgi-{app}").stdout.strip(),
            "unit_file": host.file(f"/etc/systemd/system/uwsgi-{app}.service").exists,
            "program": "absent" if "no such process" in program else program.split()[1],
            "masters": host.check_output("ps -eo args=").splitlines().count(f"{app} uWSGI master"),
            "serving": serving(host, app)}


ON_SYSTEMD = {"unit": "active", "unit_file": True, "program": "absent", "masters": 1, "serving": True}
ON_SUPERVISOR = {"unit": "inactive", "unit_file": False, "program": "RUNNING", "masters": 1, "serving": True}
SWAPPED = {"hello": ON_SYSTEMD, "hello2": ON_SUPERVISOR}
RESTORED = {"hello": ON_SUPERVISOR, "hello2": ON_SYSTEMD}


def ready(host, expected: dict) -> dict | None:
    """Each app's state when it is what `expected` says, else None."""
    state = {app: managed_by(host, app) for app in APPS}
    return state if state == expected else None


def served_fingerprint(host) -> str:
    return host.check_output("openssl s_client -connect 127.0.0.1:443 -servername hello.test </dev/null 2>/dev/null"
                             " | openssl x509 -noout -fingerprint -sha256")


def test_self_signed_certificates_removed_by_hand_are_reported_then_made_again():
    """/etc/ssl/nginx-uwsgi removed by hand while nginx serves from memory: a check run reports it,
    fails nowhere and makes nothing; the next run makes a new key (root's, 0600) and certificate
    and reloads nginx onto it; the run after that changes nothing."""
    host = molecule_hosts()[0]
    name = host.backend.get_hostname()
    before = served_fingerprint(host)
    host.check_output("mv /etc/ssl/nginx-uwsgi /root/nginx-uwsgi-ssl.moved")
    try:
        checked = run_playbook("converge.yml", limit=name, check=True)
        assert checked.returncode == 0, output(checked)
        assert recap(checked)[name]["changed"] > 0, output(checked)
        assert not host.file("/etc/ssl/nginx-uwsgi").exists
        healed = run_playbook("converge.yml", limit=name)
        assert healed.returncode == 0, output(healed)
    finally:
        host.run("test -e /etc/ssl/nginx-uwsgi || mv /root/nginx-uwsgi-ssl.moved /etc/ssl/nginx-uwsgi;"
                 " rm -rf /root/nginx-uwsgi-ssl.moved")
    key = host.file("/etc/ssl/nginx-uwsgi/hello.key")
    assert (key.user, key.mode) == ("root", 0o600)
    made = host.check_output("openssl x509 -in /etc/ssl/nginx-uwsgi/hello.crt -noout -fingerprint -sha256")
    assert wait_for(lambda: served_fingerprint(host) == made, timeout=15), (before, made, served_fingerprint(host))
    assert made != before
    assert serving(host, "hello")
    again = run_playbook("converge.yml", limit=name)
    assert_recap(again, [name], changed=0, failed=0)


def test_check_mode_reports_a_new_site_and_app_without_failing():
    """--check with a new HTTPS site (self-signed) and a new systemd app on the converged host:
    the run reports the changes and fails nowhere, and none of them is made."""
    host = molecule_hosts()[0]
    inputs = scenario_group_vars()
    inputs["nginx_uwsgi_apps"].append({"name": "hello3", "chdir": "/srv/hello", "wsgi_file": "/srv/hello/app.py",
                                       "user": "hello2", "processes": 1, "process_manager": "systemd"})
    inputs["nginx_uwsgi_sites"].append({"name": "hello3", "server_names": ["hello3.test"], "app": "hello3",
                                        "tls": True, "tls_self_signed": True})
    paths = ["/etc/nginx/sites-available/hello3.conf", "/etc/ssl/nginx-uwsgi/hello3.key",
             "/etc/uwsgi/apps/hello3.ini", "/etc/systemd/system/uwsgi-hello3.service"]
    result = run_playbook("converge.yml", extra_vars=inputs, limit=host.backend.get_hostname(), check=True)
    assert result.returncode == 0, output(result)
    counts = next(iter(recap(result).values()))
    assert counts["changed"] > 0 and counts["failed"] == 0, counts
    assert [path for path in paths if host.file(path).exists] == []
    assert host.run("systemctl cat uwsgi-hello3.service").rc != 0


def accepts(host, address: str, port: int) -> bool:
    """Whether something in the instance accepts TCP connections on address:port."""
    return host.run(f"python3 -c 'import socket; socket.create_connection((\"{address}\", {port}), 3)'").rc == 0


def test_tcp_app_behind_an_upstream_site_logging_to_the_journal():
    """An app on a TCP socket, a site that names that host:port as its upstream, and the sites'
    logs sent to the journal: the site's page comes from that app, uWSGI listens on the TCP
    socket (loopback only), and the request is logged under the site's tag, not in a file. The
    next converge marks both absent: the app and site are gone and the logs go to files again."""
    host = molecule_hosts()[0]
    hostname = host.backend.get_hostname()
    inputs = scenario_group_vars()
    inputs["nginx_uwsgi_apps"].append({"name": "tcpapp", "chdir": "/srv/hello", "wsgi_file": "/srv/hello/app.py",
                                       "user": "hello2", "socket": "127.0.0.1:3031",
                                       "environment": {"APP_GREETING": "over tcp"}})
    inputs["nginx_uwsgi_sites"].append({"name": "tcp", "server_names": ["tcp.test"], "upstream": "127.0.0.1:3031"})
    inputs["nginx_uwsgi_log_destination"] = "syslog"
    page = "-H 'Host: tcp.test' http://127.0.0.1/logged"
    try:
        result = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
        assert result.returncode == 0, output(result)
        assert wait_for(lambda: curl(host, page).startswith("app:/logged:over tcp:"), timeout=30), curl(host, page)
        address = host.check_output("hostname -I").split()[0]
        assert accepts(host, "127.0.0.1", 3031) and not accepts(host, address, 3031), address
        assert "uwsgi_pass 127.0.0.1:3031;" in host.file("/etc/nginx/sites-available/tcp.conf").content_string
        assert wait_for(lambda: "GET /logged " in host.run("journalctl -q --no-pager -t nginx_tcp").stdout, timeout=15)
        assert not host.file("/var/log/nginx/tcp.access.log").exists
    finally:
        inputs = scenario_group_vars()
        inputs["nginx_uwsgi_apps"].append({"name": "tcpapp", "state": "absent"})
        inputs["nginx_uwsgi_sites"].append({"name": "tcp", "state": "absent"})
        back = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
    assert back.returncode == 0, output(back)
    assert not accepts(host, "127.0.0.1", 3031)
    assert not host.file("/etc/nginx/sites-enabled/tcp.conf").exists
    assert curl(host, f"{HTTPS}/back-to-files").startswith("app:/back-to-files:")
    assert wait_for(lambda: "GET /back-to-files " in host.file("/var/log/nginx/hello.access.log").content_string,
                    timeout=15)


def test_apps_move_between_supervisor_and_systemd():
    """hello moves to systemd and hello2 to supervisor in one converge, then both move back:
    each time the old manager's program or unit is gone, one master serves each app, and a
    converge after the move changes nothing."""
    host = molecule_hosts()[0]
    hostname = host.backend.get_hostname()
    inputs = scenario_group_vars()
    apps = {entry["name"]: entry for entry in inputs["nginx_uwsgi_apps"]}
    apps["hello"]["process_manager"] = "systemd"
    apps["hello2"]["process_manager"] = "supervisor"
    try:
        moved = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
        assert moved.returncode == 0, output(moved)
        again = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
        assert_recap(again, [hostname], changed=0, failed=0)
        # supervisord reports STARTING for startsecs after the start.
        swapped = wait_for(lambda: ready(host, SWAPPED), timeout=30) or {app: managed_by(host, app) for app in APPS}
    finally:
        back = run_playbook("converge.yml", limit=hostname)
    assert swapped == SWAPPED, swapped
    assert back.returncode == 0, output(back)
    restored = wait_for(lambda: ready(host, RESTORED), timeout=30) or {app: managed_by(host, app) for app in APPS}
    assert restored == RESTORED, restored


BAD_INPUTS = {
    "https without certificate": (
        _with("nginx_uwsgi_sites", 0, tls_self_signed=False),
        "tls is true but there is no certificate: set tls_certificate and tls_certificate_key",
        "nginx_uwsgi_sites"),
    "site for unknown app": (_with("nginx_uwsgi_sites", 1, app="nope"),
                             "app nope is not a present entry of nginx_uwsgi_apps.", "nginx_uwsgi_apps"),
    "app without user": ({"nginx_uwsgi_apps": [{"name": "x", "chdir": "/srv", "module": "a:b"}]},
                         "user (the app user uWSGI runs as) is required.", "nginx_uwsgi_apps"),
    "app user missing on host": (_with("nginx_uwsgi_apps", 0, user="ghost"),
                                 "refers to users that do not exist on the host: ghost. Create them first",
                                 "nginx_uwsgi_apps"),
    "unknown process manager": ({"nginx_uwsgi_process_manager": "runit"},
                                "value of nginx_uwsgi_process_manager must be one of: supervisor, systemd, got: runit",
                                "nginx_uwsgi_process_manager"),
    "site without server names": (_with("nginx_uwsgi_sites", 1, server_names=[]),
                                  "server_names must list at least one host name.", "nginx_uwsgi_sites"),
    "wrong type": (_with("nginx_uwsgi_apps", 0, processes="many"),
                   "argument 'processes' is of type str found in 'nginx_uwsgi_apps'. and we were unable to convert to int",
                   "nginx_uwsgi_apps"),
}


@pytest.fixture(scope="module")
def refusals():
    """Every case of BAD_INPUTS in one run, an inventory alias each."""
    return refusal_battery(molecule_hosts(), BAD_INPUTS, ["/etc/nginx", "/etc/uwsgi"])


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case, refusals):
    assert case not in refusals["problems"], refusals["problems"][case]
    assert refusals["changed"] == [], refusals["output"][-3000:]
