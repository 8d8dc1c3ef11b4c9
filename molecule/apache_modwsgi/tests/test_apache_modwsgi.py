"""What a user of the apache_modwsgi role sees, in the mode the scenario's inputs give (daemon;
embedded mode runs through site.yml in the sites scenario)."""

from __future__ import annotations

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
    status_of,
    wait_for,
)

testinfra_hosts = molecule_host_names()

SITE = scenario_group_vars()["apache_modwsgi_sites"][0]
MODE = SITE.get("mode", "daemon")
HTTPS = "--resolve hello.test:443:127.0.0.1 https://hello.test"


def app_pid(host) -> int:
    return int(curl(host, f"{HTTPS}/pid").rsplit(":", 1)[-1])


def serving(host) -> bool:
    return status_of(host, f"{HTTPS}/") == "200"


def apache_main_pid(host) -> int:
    pid = int(host.check_output("systemctl show -p MainPID --value apache2"))
    assert pid and host.check_output(f"ps -o args= -p {pid}").startswith("/usr/sbin/apache2"), pid
    return pid


def daemon_pids(host) -> set[int]:
    lines = host.check_output("ps -eo pid=,args=").splitlines()
    return {int(line.split()[0]) for line in lines if "(wsgi:hello)" in line}


def test_apache_running_and_config_valid(host):
    assert host.service("apache2").is_running
    assert host.service("apache2").is_enabled
    result = host.run("apache2ctl configtest")
    assert result.rc == 0, result.stderr


def test_app_answers_over_https(host):
    assert wait_for(lambda: serving(host), timeout=30), host.file("/var/log/apache2/hello.error.log").content_string
    assert curl(host, f"{HTTPS}/ping").startswith("app:/ping:")


def test_app_runs_where_the_mode_says(host):
    pid = app_pid(host)
    user = host.check_output(f"ps -o user= -p {pid}").strip()
    args = host.check_output(f"ps -o args= -p {pid}").strip()
    if MODE == "daemon":
        # display-name=%{GROUP} names the process after its group; it runs as the app user.
        assert args.startswith("(wsgi:hello)"), args
        assert user == "hello"
    else:
        assert args.startswith("/usr/sbin/apache2"), args
        assert user == "www-data"


def test_embedded_interpreters_restricted_when_unused(host):
    conf = host.file("/etc/apache2/conf-available/mod-wsgi.conf").content_string
    assert ("WSGIRestrictEmbedded On" in conf) == (MODE == "daemon")
    assert ("WSGIPythonHome /srv/hello/venv" in conf) == (MODE == "embedded")


def test_https_redirect_headers_and_tls_versions(host):
    assert_https_site(host, "hello.test")


def test_acme_challenge_served_on_port_80(host):
    args = "-H 'Host: www.hello.test' http://127.0.0.1/.well-known/acme-challenge/token-123"
    assert status_of(host, args) == "200"
    assert curl(host, args) == "token-123.thumbprint\n"


def test_server_header_has_no_version(host):
    assert header_values(headers_of(host, f"{HTTPS}/"), "server") == ["apache"]


def test_unknown_host_is_refused(host):
    assert status_of(host, "-H 'Host: unknown.test' http://127.0.0.1/") == "403"


def test_static_file_served_by_apache(host):
    assert curl(host, f"{HTTPS}/static/site.css") == "body { color: #123456; }\n"
    headers = headers_of(host, f"{HTTPS}/static/site.css")
    # Revalidated on every use; a hashed name is kept for a year, the site's headers still sent.
    assert header_values(headers, "cache-control") == ["no-cache"]
    assert header_values(headers, "content-type") == ["text/css"]
    hashed = headers_of(host, f"{HTTPS}/static/site.0123456789ab.css")
    assert header_values(hashed, "cache-control") == ["public, max-age=31536000, immutable"]
    page_hsts = header_values(headers_of(host, f"{HTTPS}/"), "strict-transport-security")
    assert page_hsts and header_values(hashed, "strict-transport-security") == page_hsts
    assert curl(host, f"{HTTPS}/static/site.0123456789ab.css") == "body { color: #123456; }\n"
    # The form compressed beside the file (other content here, prepare.yml).
    assert_stored_gzip_form(host, f"{HTTPS}/static/site.css", "body { color: #abcdef; }\n", "no-cache")


def test_hygiene(host):
    modules = host.check_output("apache2ctl -M 2>/dev/null")
    assert "mpm_event_module" in modules and "wsgi_module" in modules
    for absent in ("autoindex_module", "cgi_module", "cgid_module", "dav_module", "status_module"):
        assert absent not in modules
    assert not host.file("/etc/apache2/sites-enabled/000-default.conf").exists
    for path in ("/etc/apache2/sites-available/hello.conf", "/etc/apache2/conf-available/hardening.conf"):
        assert "Ansible managed" in host.file(path).content_string, path
    key = host.file("/etc/ssl/apache-modwsgi/hello.key")
    assert (key.user, key.mode) == ("root", 0o600)


@pytest.mark.skipif(MODE != "daemon", reason="daemon mode only")
def test_touching_wsgi_script_restarts_daemon_without_failures(host):
    assert wait_for(lambda: serving(host), timeout=30)
    before = daemon_pids(host)
    assert len(before) == 2
    report = request_loop(host, "hello.test", count=2000, trigger_after=300,
                          action="touch /srv/hello/app.py", port=443, tls=True)
    assert report["failures"] == 0, report
    assert report["requests"] == 2000, report
    after = wait_for(lambda: (pids := daemon_pids(host)) and not pids & before and pids, timeout=30)
    assert after and not after & before, (before, after)


# Day two: server-wide and site inputs the same converge changes, each with where it shows,
# what shows before and after the restore, and what shows while it is changed.
CIPHERS = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
# The daemon timeouts' defaults (the argument spec's).
DEFAULTS = {"queue_timeout": 45, "socket_timeout": 60, "connect_timeout": 15, "request_timeout": 60, "startup_timeout": 15,
            "deadlock_timeout": 60, "graceful_timeout": 15, "shutdown_timeout": 5}
DAY_TWO_GLOBALS = {"apache_modwsgi_keepalive_requests": 500, "apache_modwsgi_tls_curves": "X25519:secp384r1",
                   "apache_modwsgi_buffered_logs": False, "apache_modwsgi_static_precompressed": False,
                   "apache_modwsgi_extra_config": "LimitRequestFieldSize 16380",
                   "apache_modwsgi_tls_protocol": "-all +TLSv1.3", "apache_modwsgi_tls_ciphers": CIPHERS}
DAY_TWO_SITE = {"hsts_max_age": 600, "static_max_age": 604800, "hsts_include_subdomains": False,
                "security_headers": False, "extra_config": "Header always set X-Day-Two changed"}
# Settings of the daemon process group (daemon mode only).
DAY_TWO_DAEMON = {"processes": 3, "threads": 2, "maximum_requests": 500, "restart_interval": 3600, "queue_timeout": 40,
                  "socket_timeout": 50, "connect_timeout": 10, "request_timeout": 55, "startup_timeout": 20,
                  "deadlock_timeout": 50, "graceful_timeout": 10, "shutdown_timeout": 4}
DAY_TWO_DAEMON_SHOWN = {
    "processes": ("site", " processes=2 ", " processes=3 "),
    "threads": ("site", " threads=1 ", " threads=2 "),
    "maximum_requests": ("site", "maximum-requests: none", " maximum-requests=500"),
    "restart_interval": ("site", "restart-interval: none", " restart-interval=3600"),
    **{key: ("site", f" {key.replace('_', '-')}={DEFAULTS[key]}", f" {key.replace('_', '-')}={value}")
       for key, value in DAY_TWO_DAEMON.items() if key.endswith("_timeout")},
}
DAY_TWO_SHOWN = {
    "apache_modwsgi_keepalive_requests": ("conf", "MaxKeepAliveRequests 1000", "MaxKeepAliveRequests 500"),
    "apache_modwsgi_tls_curves": ("conf", "Curves X25519:prime256v1:secp384r1", "Curves X25519:secp384r1\n"),
    "apache_modwsgi_buffered_logs": ("conf", "BufferedLogs On", "buffered logs: none"),
    # site.css.gz holds other content than site.css (prepare.yml): a client that accepts gzip gets it.
    "apache_modwsgi_static_precompressed": ("static_gzip", "#abcdef", "#123456"),
    "apache_modwsgi_tls_protocol": ("conf", "SSLProtocol -all +TLSv1.2 +TLSv1.3\n", "SSLProtocol -all +TLSv1.3\n"),
    "apache_modwsgi_tls_ciphers": ("conf", "SSLCipherSuite ECDHE-ECDSA-AES128-GCM-SHA256:", f"SSLCipherSuite {CIPHERS}\n"),
    "apache_modwsgi_extra_config": ("conf", "extra: none", "LimitRequestFieldSize 16380"),
    "hsts_max_age": ("page", "strict-transport-security: max-age=63072000", "strict-transport-security: max-age=600"),
    "hsts_include_subdomains": ("page", "; includesubdomains", "strict-transport-security: max-age=600\r"),
    "security_headers": ("page", "x-content-type-options: nosniff", "security headers: none"),
    "extra_config": ("page", "x-day-two: none", "x-day-two: changed"),
    "static_max_age": ("static", "cache-control: no-cache", "cache-control: public, max-age=604800"),
}


def rendered(host) -> dict[str, str]:
    """Where each day-two input shows: the server-wide files Apache reads, and the headers of
    the site's page and of one of its static files."""
    conf = host.check_output("cat /etc/apache2/conf-enabled/hardening.conf /etc/apache2/conf-enabled/tls.conf")
    page = headers_of(host, f"{HTTPS}/")
    site = host.file("/etc/apache2/sites-available/hello.conf").content_string
    return {"conf": "\n".join([conf, "" if "BufferedLogs On" in conf else "buffered logs: none",
                               "" if "LimitRequestFieldSize" in conf else "extra: none"]),
            "page": "\n".join([page, "" if "x-content-type-options" in page else "security headers: none",
                                "" if "x-day-two" in page else "x-day-two: none"]),
            "site": "\n".join([site, "" if "maximum-requests" in site else "maximum-requests: none",
                                "" if "restart-interval" in site else "restart-interval: none"]),
            "static": headers_of(host, f"{HTTPS}/static/site.css"),
            "static_gzip": curl(host, f"--compressed -H 'Accept-Encoding: gzip' {HTTPS}/static/site.css")}


def test_site_change_reloads_apache_without_restart(host):
    """A converge that changes a virtual host (a new alias) and the day-two inputs applies them
    with a graceful reload: Apache's main process stays, each change shows, and the restore
    brings the old values back."""
    hostname = host.backend.get_hostname()
    alias = "reload.hello.test"
    args = f"-H 'Host: {alias}' http://127.0.0.1/x"
    main = apache_main_pid(host)
    # Not a name of the site yet: the catch-all virtual host refuses it.
    assert status_of(host, args) == "403"
    before = rendered(host)
    inputs = scenario_group_vars() | DAY_TWO_GLOBALS
    inputs["apache_modwsgi_sites"][0]["server_aliases"].append(alias)
    inputs["apache_modwsgi_sites"][0].update(DAY_TWO_SITE)
    daemon = inputs["apache_modwsgi_sites"][0].get("mode", "daemon") == "daemon"
    if daemon:
        inputs["apache_modwsgi_sites"][0].update(DAY_TWO_DAEMON)
    try:
        result = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
        assert result.returncode == 0, output(result)
        redirect = f"-o /dev/null -w '%{{http_code}} %{{redirect_url}}' {args}"
        # The alias now belongs to the site, which sends it to its canonical name over HTTPS.
        assert wait_for(lambda: curl(host, redirect) == "301 https://hello.test/x", timeout=15), curl(host, redirect)
        assert apache_main_pid(host) == main, "Apache was restarted instead of reloaded"
        after = rendered(host)
    finally:
        restored = run_playbook("converge.yml", limit=hostname)
    assert restored.returncode == 0, output(restored)
    assert wait_for(lambda: status_of(host, args) == "403", timeout=15)
    assert apache_main_pid(host) == main
    assert wait_for(lambda: serving(host), timeout=30), journal(host, "apache2")
    back = rendered(host)
    wrong = day_two_not_shown(DAY_TWO_SHOWN | (DAY_TWO_DAEMON_SHOWN if daemon else {}), before, after, back)
    assert not wrong, (wrong, before, after)


def enabled_modules(host) -> set[str]:
    return set(host.check_output("ls /etc/apache2/mods-enabled").split())


def test_modules_and_packages_changed_by_hand_are_reported_then_put_back(host):
    """headers disabled, autoindex enabled and ssl-cert removed by hand: a check run reports it,
    fails nowhere and changes nothing; the next run puts back the role's modules and package
    (Apache serves the site with its headers again); the run after that changes nothing."""
    hostname = host.backend.get_hostname()
    assert wait_for(lambda: serving(host), timeout=30)
    modules = enabled_modules(host)
    assert {"headers.load", "mpm_event.load"} <= modules and "autoindex.load" not in modules, modules
    host.check_output("a2dismod -q headers && a2enmod -q autoindex && apt-get remove -y -q ssl-cert")
    changed = enabled_modules(host)
    checked = run_playbook("converge.yml", limit=hostname, check=True)
    assert checked.returncode == 0, output(checked)
    assert recap(checked)[hostname]["changed"] > 0, output(checked)
    assert enabled_modules(host) == changed
    assert not host.package("ssl-cert").is_installed
    healed = run_playbook("converge.yml", limit=hostname)
    assert healed.returncode == 0, output(healed)
    assert enabled_modules(host) == modules
    assert host.package("ssl-cert").is_installed
    assert wait_for(lambda: serving(host), timeout=30), journal(host, "apache2")
    assert header_values(headers_of(host, f"{HTTPS}/"), "x-content-type-options") == ["nosniff"]
    again = run_playbook("converge.yml", limit=hostname)
    assert_recap(again, [hostname], changed=0, failed=0)


def test_killed_apache_is_serving_again_within_10_seconds(host):
    """systemd restarts Apache (the role's Restart=on-failure drop-in)."""
    assert host.file("/etc/systemd/system/apache2.service.d/restart.conf").contains("^Restart=on-failure")
    assert host.check_output("systemctl show -p Restart --value apache2") == "on-failure"
    assert wait_for(lambda: serving(host), timeout=30)
    old = apache_main_pid(host)
    host.check_output(f"kill -KILL {old}")
    started = time.monotonic()

    def new_apache_serving() -> bool:
        # A new main process (not the killed one, not none), and the site answering through it.
        pid = host.check_output("systemctl show -p MainPID --value apache2")
        return pid not in ("0", str(old)) and serving(host)

    back = wait_for(new_apache_serving, timeout=10, interval=0.2)
    elapsed = time.monotonic() - started
    assert back and elapsed <= 10, (elapsed, journal(host, "apache2"))
    assert apache_main_pid(host) != old
    assert host.check_output("systemctl is-active apache2") == "active"


def test_broken_extra_config_keeps_previous_site(host):
    site = "/etc/apache2/sites-available/hello.conf"
    before = host.file(site).sha256sum
    inputs = scenario_group_vars()
    inputs["apache_modwsgi_sites"][0]["extra_config"] = "ThisIsNotADirective on"
    result = run_playbook("converge.yml", extra_vars=inputs, limit=host.backend.get_hostname())
    text = output(result)
    assert result.returncode != 0, text
    assert "Invalid command 'ThisIsNotADirective'" in text, text
    assert "previous files are back in place" in text, text
    assert host.file(site).sha256sum == before
    assert host.run("apache2ctl configtest").rc == 0
    assert serving(host), journal(host, "apache2")


def test_virtualenv_from_another_python_is_refused(host):
    inputs = scenario_group_vars()
    inputs["apache_modwsgi_sites"][0]["python_home"] = "/srv/hello/othervenv"
    before = host.file("/etc/apache2/sites-available/hello.conf").sha256sum
    result = run_playbook("converge.yml", extra_vars=inputs, limit=host.backend.get_hostname())
    text = output(result)
    assert result.returncode != 0, text
    assert "was made with Python 3.9, but mod_wsgi is built for Python 3." in text, text
    assert host.file("/etc/apache2/sites-available/hello.conf").sha256sum == before
    assert serving(host)


def _with(**changes) -> dict:
    sites = scenario_group_vars()["apache_modwsgi_sites"]
    sites[0].update(changes)
    return {"apache_modwsgi_sites": sites}


BAD_INPUTS = {
    "https without certificate": (
        _with(tls_self_signed=False),
        "tls is true but there is no certificate: set tls_certificate and tls_certificate_key"),
    "daemon mode without user": (
        _with(mode="daemon", user=None), "user is required in daemon mode (the app runs as this user, not as www-data)."),
    "unknown mode": (_with(mode="threaded"), "value of mode must be one of: daemon, embedded, got: threaded"),
    "two embedded sites, two virtualenvs": (
        {"apache_modwsgi_sites": [
            dict(SITE, name="a", mode="embedded", python_home="/srv/a/venv"),
            dict(SITE, name="b", mode="embedded", python_home="/srv/b/venv", server_name="b.test"),
        ]},
        "use different python_home/python_path values. Give them the same virtualenv, or use mode: daemon",
    ),
    "wrong type": (
        _with(processes="many"),
        "argument 'processes' is of type str found in 'apache_modwsgi_sites'. and we were unable to convert to int"),
    "rewrite disabled, precompressed static files on": (
        {"apache_modwsgi_disabled_modules": ["autoindex", "rewrite"]},
        "apache_modwsgi_static_precompressed needs mod_rewrite, which apache_modwsgi_disabled_modules lists",
        "apache_modwsgi_disabled_modules"),
}


@pytest.fixture(scope="module")
def refusals():
    """Every case of BAD_INPUTS in one run, an inventory alias each."""
    BAD_INPUTS["daemon mode without user"][0]["apache_modwsgi_sites"][0].pop("user")
    # The variable each refusal names: apache_modwsgi_sites unless the case says another.
    cases = {case: (bad, message, *(named or ["apache_modwsgi_sites"])) for case, (bad, message, *named) in BAD_INPUTS.items()}
    return refusal_battery(molecule_hosts(), cases, ["/etc/apache2"])


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case, refusals):
    assert case not in refusals["problems"], refusals["problems"][case]
    assert refusals["changed"] == [], refusals["output"][-3000:]
