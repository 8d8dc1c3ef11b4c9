"""What a user of the nginx_uwsgi role sees: requests through nginx -> unix socket -> uWSGI."""

from __future__ import annotations

import re

import pytest
from wsgistack_testlib import (
    assert_https_site,
    assert_refused_before_change,
    curl,
    header_values,
    headers_of,
    journal,
    molecule_host_names,
    molecule_hosts,
    output,
    request_loop,
    run_playbook,
    scenario_group_vars,
    status_of,
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
    assert "cache-control: max-age=2592000" in headers
    assert "content-type: text/css" in headers


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
    host.run(f"kill -KILL {old}")
    new = wait_for(lambda: (pid := master_pid(host, app)) and pid != old and pid, timeout=20)
    assert new and new != old
    assert wait_for(lambda: serving(host, app), timeout=20), journal(host, f"uwsgi-{app}")


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


BAD_INPUTS = {
    "https without certificate": (_with("nginx_uwsgi_sites", 0, tls_self_signed=False), "there is no certificate",
                                  "nginx_uwsgi_sites"),
    "site for unknown app": (_with("nginx_uwsgi_sites", 1, app="nope"), "app nope is not a present entry",
                             "nginx_uwsgi_apps"),
    "app without user": ({"nginx_uwsgi_apps": [{"name": "x", "chdir": "/srv", "module": "a:b"}]}, "user (the app user",
                         "nginx_uwsgi_apps"),
    "app user missing on host": (_with("nginx_uwsgi_apps", 0, user="ghost"), "ghost", "nginx_uwsgi_apps"),
    "unknown process manager": ({"nginx_uwsgi_process_manager": "runit"}, "runit", "nginx_uwsgi_process_manager"),
    "site without server names": (_with("nginx_uwsgi_sites", 1, server_names=[]), "server_names must list",
                                  "nginx_uwsgi_sites"),
    "wrong type": (_with("nginx_uwsgi_apps", 0, processes="many"), "processes", "nginx_uwsgi_apps"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case):
    bad, message, variable = BAD_INPUTS[case]
    assert_refused_before_change(molecule_hosts(), bad, message, variable, ["/etc/nginx", "/etc/uwsgi"])
