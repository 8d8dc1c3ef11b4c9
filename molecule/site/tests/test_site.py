"""site.yml for every stack (each host's wsgistack_stack): the example project over HTTPS,
code-only releases with playbooks/deploy.yml, and the production rules."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from wsgistack_testlib import (
    assert_recap,
    failure_messages,
    inventory_host_vars,
    molecule_host_names,
    molecule_hosts,
    output,
    recap,
    run_playbook,
    run_playbooks_at_once,
    sent_as_stored,
    site_get,
    site_get_encoded,
    site_headers,
    start_request_loop,
    status_of,
    stop_request_loop,
    tls_compliance_failures,
    tree_checksums,
    wait_for,
)

testinfra_hosts = molecule_host_names()

ROOT = "/srv/mysite"
DEPLOY = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "deploy.yml")
ROLLBACK = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "rollback.yml")


def stack(host) -> str:
    """The host's wsgistack_stack, from the group it is in."""
    return host.ansible.get_variables()["wsgistack_stack"]


def get(host, url: str) -> tuple[str, str]:
    return site_get(host, "mysite.test", url)


def headers(host, url: str) -> str:
    return site_headers(host, "mysite.test", url)


def current(host) -> str:
    return host.check_output(f"readlink {ROOT}/current")


def server_pids(host) -> str:
    """The web server's and the app server's main processes."""
    return host.run("pgrep -o -x nginx; pgrep -o -x apache2; pgrep -o -f '^[^ ]*uwsgi[^ ]* --ini'; true").stdout


def test_site_answers_over_https_with_its_static_css(host):
    status, body = get(host, "/")
    assert status == "200" and "release 1" in body, body
    css = re.search(r'href="(/static/notes/site\.[0-9a-f]{12}\.css)"', body).group(1)
    status, stylesheet = get(host, css)
    assert status == "200" and "#1d3557" in stylesheet
    assert "cache-control: public, max-age=31536000, immutable" in headers(host, css)
    # The unhashed name is revalidated on every use.
    assert "cache-control: no-cache" in headers(host, "/static/notes/site.css")
    # Text files go in the form compressed at deploy time (Brotli is never made on the fly
    # here), with their type and Vary, the same bytes once decoded.
    admin_css = "/static/admin/css/base.css"
    status, plain = get(host, admin_css)
    assert status == "200" and "--primary" in plain
    for encoding in ("br", "gzip"):
        status, sent, decoded = site_get_encoded(host, "mysite.test", admin_css, encoding)
        assert status == "200" and decoded == plain and f"content-encoding: {encoding}" in sent, (encoding, sent)
        # The form stored at deploy time (its length), not one compressed on the fly (none).
        form = f"{ROOT}/current/_static/admin/css/base.css{'.br' if encoding == 'br' else '.gz'}"
        assert sent_as_stored(host, sent, form), (encoding, host.file(form).size, sent)
        assert "content-type: text/css" in sent and "vary: accept-encoding" in sent, sent
        assert "cache-control: no-cache" in sent, sent
    # The hashed name's forms are kept for a year like the file (its own content: the manifest
    # storage rewrites the URLs in a hashed copy).
    manifest = json.loads(host.check_output(f"cat {ROOT}/current/_static/staticfiles.json"))
    hashed_css = "/static/" + manifest["paths"]["admin/css/base.css"]
    status, hashed_plain = get(host, hashed_css)
    assert status == "200" and "--primary" in hashed_plain
    status, sent, decoded = site_get_encoded(host, "mysite.test", hashed_css, "br")
    assert status == "200" and decoded == hashed_plain, sent
    assert sent_as_stored(host, sent, f"{ROOT}/current/_static{hashed_css.removeprefix('/static')}.br"), sent
    assert "cache-control: public, max-age=31536000, immutable" in sent, sent
    page = headers(host, "/")
    assert page.count("strict-transport-security:") == 1, page
    assert ("server: nginx" if stack(host) == "nginx_uwsgi" else "server: apache") in page
    assert status_of(host, "--resolve mysite.test:80:127.0.0.1 http://mysite.test/") == "301"


def network_address(container: str) -> tuple[str, str]:
    """A container's address, and its network's gateway: the address the controller connects from."""
    found = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container],
                           capture_output=True, text=True, check=True)
    network = next(iter(json.loads(found.stdout).values()))
    return network["IPAddress"], network["Gateway"]


def answers(address: str, port: int) -> str:
    """What a TCP connection from the controller gets: "open", "refused" (nothing listens), or
    "dropped" (no answer in 3 s: the firewall)."""
    try:
        socket.create_connection((address, port), timeout=3).close()
    except TimeoutError:
        return "dropped"
    except OSError:
        return "refused"
    return "open"


def test_firewall_admits_the_site_and_what_the_inventory_adds():
    """A single host admits HTTP and HTTPS from anywhere and drops the rest (a server listening on
    port 8081 gets no connection). Day two, on one host: a rule for 8081 from the controller
    (wsgistack_firewall_rules, which site.yml adds to the role's firewall_rules) (with
    an IPv6 network, and a UDP rule) and another SSH port open them; firewall_enabled: false removes
    the firewall; the next run puts it back. A table deleted by hand is reported by a check run
    (which changes nothing) and put back by the next run; the run after that changes nothing. The
    site answers from the controller all the while."""
    name = next(h for h in molecule_hosts() if stack(h) == "apache_daemon").backend.host
    h = next(x for x in molecule_hosts() if x.backend.host == name)
    address, controller = network_address(name)
    h.check_output("systemd-run --unit wsgistack-probe python3 -m http.server 8081")
    try:
        assert wait_for(lambda: h.run("curl -s -o /dev/null http://127.0.0.1:8081/").rc == 0, timeout=20)
        assert (answers(address, 443), answers(address, 80), answers(address, 8081)) == ("open", "open", "dropped")
        table = h.check_output("nft list table inet wsgistack_firewall")
        assert "policy drop;" in table and 'tcp dport 22 accept comment "ssh"' in table, table
        rules = h.file("/etc/wsgistack/firewall.nft")
        assert (rules.user, rules.mode) == ("root", 0o600) and h.service("wsgistack-firewall").is_enabled
        opened = run_playbook("converge.yml", limit=name, tags="firewall", extra_vars={
            "firewall_ssh_port": 2222,
            "wsgistack_firewall_rules": [{"name": "probe", "port": 8081, "sources": [controller, "fd00:1::/64"]},
                                         {"name": "syslog", "port": "5514-5515", "proto": "udp"}]})
        assert opened.returncode == 0, output(opened)
        table = h.check_output("nft list table inet wsgistack_firewall")
        assert (answers(address, 443), answers(address, 8081)) == ("open", "open")
        assert f"ip saddr {controller} tcp dport 8081 accept" in table, table
        assert "ip6 saddr fd00:1::/64 tcp dport 8081 accept" in table, table
        assert "udp dport 5514-5515 accept" in table and "tcp dport 2222 accept" in table and "dport 22 " not in table, table
        off = run_playbook("converge.yml", limit=name, tags="firewall", extra_vars={"firewall_enabled": False})
        assert off.returncode == 0, output(off)
        assert h.run("nft list table inet wsgistack_firewall").rc != 0
        assert not h.file("/etc/wsgistack/firewall.nft").exists
        assert not h.file("/etc/systemd/system/wsgistack-firewall.service").exists
        assert (answers(address, 443), answers(address, 8081)) == ("open", "open")
        on = run_playbook("converge.yml", limit=name, tags="firewall")
        assert on.returncode == 0, output(on)
        assert (answers(address, 443), answers(address, 80), answers(address, 8081)) == ("open", "open", "dropped")
        assert h.service("wsgistack-firewall").is_enabled
        h.check_output("nft delete table inet wsgistack_firewall")
        assert (answers(address, 443), answers(address, 8081)) == ("open", "open")
        checked = run_playbook("converge.yml", limit=name, tags="firewall", check=True)
        assert checked.returncode == 0, output(checked)
        assert recap(checked)[name]["changed"] > 0, output(checked)
        assert answers(address, 8081) == "open"
        healed = run_playbook("converge.yml", limit=name, tags="firewall")
        assert healed.returncode == 0, output(healed)
        assert recap(healed)[name]["changed"] > 0, output(healed)
        assert (answers(address, 443), answers(address, 8081)) == ("open", "dropped")
        again = run_playbook("converge.yml", limit=name, tags="firewall")
        assert again.returncode == 0, output(again)
        assert_recap(again, [name], changed=0, failed=0)
    finally:
        h.run("systemctl stop wsgistack-probe")


def test_collected_static_files_are_roots_and_the_app_cannot_change_them(host):
    """The app serves its static files but, compromised, could not rewrite them: every file
    and directory of the live release's collected static files is root's and not writable by
    others; the app's user is refused when it tries."""
    static = f"{ROOT}/current/_static"
    assert host.file(f"{static}/notes").is_directory
    assert host.check_output(f"find {static} ! -user root -o ! -group root -o -perm /022 | wc -l") == "0"
    assert int(host.check_output(f"find {static} -type f | wc -l")) > 100
    user = host.check_output(f"stat -c %U {ROOT}/shared/media")
    css = host.check_output(f"find {static}/notes -name 'site.*.css' | head -1")
    refused = host.run(f"sudo -u {user} sh -c 'echo x >> {css}'")
    assert refused.rc != 0 and "Permission denied" in refused.stderr, refused.stderr


# Uploads a user could make to trick the site into running their page or script: each must
# come back with no sniffing and a script-less sandbox; pages, SVG, XML and scripts must be
# downloaded, not shown. An image is shown as it is.
MEDIA_FILES = {"upload.html": True, "drawing.SVG": True, "feed.xml": True, "tool.js": True, "photo.png": False}


def test_uploaded_media_cannot_run_as_the_site(host):
    media = f"{ROOT}/shared/media"
    user = host.check_output(f"stat -c %U {media}")
    for name in MEDIA_FILES:
        host.check_output(f"printf '%s' '<script>alert(1)</script>' | sudo -u {user} tee {media}/{name} > /dev/null")
    try:
        for name, attachment in MEDIA_FILES.items():
            status, _ = get(host, f"/media/{name}")
            assert status == "200", (name, status)
            shown = headers(host, f"/media/{name}")
            assert shown.count("x-content-type-options: nosniff") == 1, (name, shown)
            assert re.search(r"^content-security-policy: sandbox; default-src 'none'", shown, re.M), (name, shown)
            assert ("content-disposition: attachment" in shown) == attachment, (name, shown)
            assert "strict-transport-security: max-age=" in shown, (name, shown)
    finally:
        host.run(f"rm -f {' '.join(f'{media}/{name}' for name in MEDIA_FILES)}")
    # The site's own pages keep their headers and get neither.
    page = headers(host, "/")
    assert "content-disposition" not in page and "sandbox" not in page, page


def test_tls_meets_mozilla_intermediate_except_the_self_signed_chain(host):
    """sslyze's intermediate check from the controller: protocols, ciphers, curves and the
    certificate's lifetime comply; only the self-signed certificate's path cannot validate."""
    failures = tls_compliance_failures(host, "mysite.test")
    assert [failure.split(":")[0] for failure in failures] == ["certificate_path_validation"], failures
    days = host.check_output("openssl x509 -noout -startdate -enddate < $(readlink -f /etc/ssl/*/mysite.crt) |"
                             " sed 's/.*=//' | xargs -I{} date -d {} +%s | paste -sd' '")
    start, end = map(int, days.split())
    assert 360 <= (end - start) / 86400 < 366, days


def test_admin_login_page(host):
    status, body = get(host, "/admin/login/")
    assert status == "200" and "Django administration" in body


def test_app_runs_where_the_stack_puts_it(host):
    if stack(host) == "nginx_uwsgi":
        users = host.check_output("ps -o user= -C uwsgi-core | sort -u").split()
        assert users == ["mysite"], users
    elif stack(host) == "apache_daemon":
        daemons = host.check_output("ps -eo user:20,args | grep '[(]wsgi:mysite' || true").splitlines()
        assert daemons and all(line.split()[0] == "mysite" for line in daemons), daemons
    else:
        # Embedded: the app runs inside Apache's children, as www-data, which owns its data.
        assert host.check_output("ps -eo args | grep -c '[(]wsgi:' || true").strip() == "0"
        assert host.file(f"{ROOT}/shared/data/db.sqlite3").user == "www-data"


# Day two on every stack and both Debian releases: inputs of the site, the app server and the
# web server changed in one site.yml run on all hosts, then the scenario's run puts them back.
# Users tune the web server with its roles' tags: the release is left alone.
WEB_TAGS = "nginx_uwsgi,supervisor,apache_modwsgi"
# django_app_hsts_seconds and django_app_hsts_preload drive the header each web server sends
# (nginx_uwsgi_sites' and apache_modwsgi_sites' hsts_max_age and hsts_preload).
DAY_TWO = {"django_app_hsts_seconds": 31536000, "django_app_hsts_preload": True, "django_app_processes": 3,
           "nginx_uwsgi_keepalive_timeout": 30, "apache_modwsgi_keepalive_requests": 500}
DAY_TWO_SHOWN = {  # stack: (shown before and after the restore, shown while changed)
    "nginx_uwsgi": ({"hsts": ["max-age=63072000; includesubdomains"], "server": ["keepalive_timeout 65;"],
                     "app": ["processes = 2"], "workers": 2},
                    {"hsts": ["max-age=31536000; includesubdomains; preload"], "server": ["keepalive_timeout 30;"],
                     "app": ["processes = 3"], "workers": 3}),
    "apache_daemon": ({"hsts": ["max-age=63072000; includesubdomains"], "server": ["MaxKeepAliveRequests 1000"],
                       "app": ["processes=2"], "workers": 2},
                      {"hsts": ["max-age=31536000; includesubdomains; preload"], "server": ["MaxKeepAliveRequests 500"],
                       "app": ["processes=3"], "workers": 3}),
    # Embedded: the app lives in Apache's own children, so the process count has nothing to change.
    "apache_embedded": ({"hsts": ["max-age=63072000; includesubdomains"], "server": ["MaxKeepAliveRequests 1000"],
                         "app": [], "workers": 0},
                        {"hsts": ["max-age=31536000; includesubdomains; preload"], "server": ["MaxKeepAliveRequests 500"],
                         "app": [], "workers": 0}),
}


def day_two_shown(host) -> dict:
    """Where DAY_TWO shows on a host: the page's HSTS header, the web server's configuration,
    the app server's configuration and its running worker processes."""
    hsts = re.findall(r"^strict-transport-security: (.*?)\r?$", headers(host, "/"), re.M)
    if stack(host) == "nginx_uwsgi":
        server = re.findall(r"^ *(keepalive_timeout \d+;)", host.check_output("nginx -T 2>/dev/null"), re.M)
        app = re.findall(r"^processes = \d+", host.file("/etc/uwsgi/apps/mysite.ini").content_string, re.M)
        # The master and its workers (the site's only uWSGI app).
        workers = int(host.check_output("ps -o pid= -C uwsgi-core | wc -l")) - 1
    else:
        server = re.findall(r"MaxKeepAliveRequests \d+", host.file("/etc/apache2/conf-enabled/hardening.conf").content_string)
        app = re.findall(r"processes=\d+", host.file("/etc/apache2/sites-available/mysite.conf").content_string)
        workers = int(host.check_output("ps -eo args | grep -c '[(]wsgi:mysite' || true"))
    return {"hsts": hsts, "server": server, "app": app, "workers": workers}


# What mod_wsgi logs for the requests a graceful reload of Apache can lose in daemon mode: one
# that reached an old child after Apache removed the daemon socket and before it made the new
# one (mod_wsgi does not retry a socket that does not exist), and one the stopped daemon was
# still running.
RELOAD_LOSSES = re.compile(r"\(2\)No such file or directory: .*Unable to connect to WSGI daemon process 'mysite'"
                           r"|Truncated or oversized response headers received from daemon process 'mysite'")


def reload_losses(host, since: int) -> int:
    """The requests of RELOAD_LOSSES in the site's Apache error log after its first `since` lines."""
    lines = host.file("/var/log/apache2/mysite.error.log").content_string.splitlines()[since:]
    return sum(1 for line in lines if RELOAD_LOSSES.search(line))


def error_log_lines(host) -> int:
    return int(host.check_output("cat /var/log/apache2/mysite.error.log 2>/dev/null | wc -l"))


def assert_answered_through_reloads(host, report: dict, since: int, reloads: int) -> None:
    """The request loop saw only the page, except, in daemon mode, what Apache's graceful reloads
    can lose (documented in the apache_modwsgi role): at most two requests per reload, each one
    that mod_wsgi logged as such."""
    name = host.backend.host
    assert report["requests"] > 0, (name, report)
    if stack(host) != "apache_daemon":
        assert report["failures"] == 0 and set(report["statuses"]) == {"200"}, (name, report)
        return
    assert set(report["statuses"]) <= {"200", "503", "500"}, (name, report)
    assert report["failures"] <= 2 * reloads, (name, report)
    assert report["failures"] <= reload_losses(host, since), (name, report)


def test_day_two_inputs_change_on_every_stack_and_go_back():
    """DAY_TWO in one site.yml run on every host (each stack), limited to the
    web server roles' tags as users tune a live site (django_app_hsts_seconds and
    django_app_hsts_preload become the sites' hsts_max_age and hsts_preload, the header each
    web server sends): each change shows on the host; the same
    run with the scenario's values puts every value back; a request loop on each host sees only
    the page it saw before, all the while."""
    hosts = molecule_hosts()
    for h in hosts:
        assert day_two_shown(h) == DAY_TWO_SHOWN[stack(h)][0], (h.backend.host, day_two_shown(h))
        start_request_loop(h, "mysite.test", port=443, tls=True, batch=10, pause=1.0)
    before = {h.backend.host: (current(h), get(h, "/")) for h in hosts}
    logged = {h.backend.host: error_log_lines(h) for h in hosts if stack(h) == "apache_daemon"}
    after, back = {}, {}
    try:
        changed = run_playbook("converge.yml", extra_vars=DAY_TWO, tags=WEB_TAGS)
        assert changed.returncode == 0, output(changed)
        for h in hosts:
            wanted = DAY_TWO_SHOWN[stack(h)][1]
            wait_for(lambda h=h, w=wanted: day_two_shown(h) == w, timeout=30)
            after[h.backend.host] = day_two_shown(h)
        restored = run_playbook("converge.yml", tags=WEB_TAGS)
        assert restored.returncode == 0, output(restored)
        for h in hosts:
            wanted = DAY_TWO_SHOWN[stack(h)][0]
            wait_for(lambda h=h, w=wanted: day_two_shown(h) == w, timeout=30)
            back[h.backend.host] = day_two_shown(h)
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    for h in hosts:
        name, (old, new) = h.backend.host, DAY_TWO_SHOWN[stack(h)]
        assert (after[name], back[name]) == (new, old), name
        # Nothing of the release changed: the same release, the same page.
        assert (current(h), get(h, "/")) == before[name]
        # Two runs, each with one graceful reload of the web server.
        assert_answered_through_reloads(h, reports[name], logged.get(name, 0), reloads=2)


@pytest.fixture(scope="module")
def v2_deploy():
    hosts = molecule_hosts()
    for h in hosts:
        h.check_output(f"{ROOT}/bin/manage shell -c \"from notes.models import Note; Note.objects.create(text='before v2')\"")
    before = {h.backend.host: current(h) for h in hosts}
    v2 = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", "v2")
    result = run_playbook(DEPLOY, extra_vars={"mysite_source_path": v2})
    return hosts, before, result, v2


def app_reload_tasks() -> set[str]:
    """The tasks of the web server roles' app_reload entry points, as a run names them."""
    roles = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "roles"
    names = set()
    for role in ("nginx_uwsgi", "apache_modwsgi"):
        spec = yaml.safe_load((roles / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["app_reload"]
        names.add(f"{role} : Validating arguments against arg spec 'app_reload' - {spec['short_description']}")
    for role, tasks in (("nginx_uwsgi", "app_reload"), ("apache_modwsgi", "app_reload"), ("common", "platform")):
        names |= {f"{role} : {task['name']}" for task in yaml.safe_load((roles / role / "tasks" / f"{tasks}.yml").read_text())}
    return names


def test_code_only_deploy_switches_to_the_new_release(v2_deploy):
    hosts, before, result, _ = v2_deploy
    text = output(result)
    assert result.returncode == 0, text
    # No package, web server or certificate work (the first play only checks their inputs): of
    # the other roles, only the app server's app_reload entry point runs.
    deploying = text.split("PLAY [Deploy the Django project]", 1)[1]
    assert "Install venv support" not in deploying
    roles = "nginx_uwsgi|apache_modwsgi|supervisor|certbot|common"
    others = re.findall(rf"TASK \[wsgistack\.django\.((?:{roles}) : .+?)\] \*", deploying)
    assert any(task.endswith(": Chain-reload the app and wait for every worker") for task in others), others
    assert not set(others) - app_reload_tasks(), sorted(set(others) - app_reload_tasks())
    for h in hosts:
        assert current(h) != before[h.backend.host]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body and "before v2" in body, body
        # The working copy's secrets (.env files, secrets.json) stayed behind.
        assert h.run(f"grep -rl wsgistack-working-copy-secret {ROOT}/releases/").stdout == ""
        # Collected over the previous release's files (root's): the new release's are root's too.
        static = f"{ROOT}/current/_static"
        assert h.file(f"{static}/notes").is_directory
        assert h.check_output(f"find {static} ! -user root -o ! -group root -o -perm /022 | wc -l") == "0"


def release_dir(variant: str) -> str:
    return os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", variant)


# Each a deploy.yml run on top of the live v2: a release that fails its health check after the
# switch (checked through the web server only, so it goes live and back), a project WSGI module
# that does not exist, a package that does not exist. With the message each run must give. (The
# django_app scenario fails a migration and a release that cannot import with the role alone.)
FAILING_CHANGES = {
    "unhealthy": ({"mysite_source_path": release_dir("unhealthy"), "django_app_health_check_path": "/health/",
                   "django_app_check_before_switch": False}, "failed its check after the switch"),
    "wsgi": ({"django_app_wsgi_module": "mysite.no_such_wsgi"}, "No module named 'mysite.no_such_wsgi'"),
    "package": ({"django_app_pip_packages": ["wsgistack-no-such-package==1.0"]},
                "No matching distribution found for wsgistack-no-such-package==1.0"),
}


def one_host_per_stack(hosts: list) -> list:
    """A host of each stack, for tests whose every run goes to
    each stack but need not go to each platform as well."""
    chosen: dict = {}
    for h in hosts:
        chosen.setdefault(stack(h), h)
    return list(chosen.values())


def names_of(hosts: list) -> list[str]:
    return [h.backend.host for h in hosts]


# The switch back after a failed check goes through each stack's web server, so every stack
# takes that one; the failures before the switch (build, import) happen before any web server
# work and are spread over the stacks, each stack's run going at once.
FAILING_ROUNDS = [
    {"nginx_uwsgi": "unhealthy", "apache_daemon": "unhealthy"},
    {"nginx_uwsgi": "package", "apache_daemon": "wsgi"},
]


def test_failed_changes_leave_every_stack_answering_as_before(v2_deploy):
    """A release that fails its check after the switch (on each stack), then a missing WSGI
    module and a missing package, one on each stack, each deployed with deploy.yml: all the
    while a request loop on each host gets
    only the answers it got before (200, the live release's page), and the next good run (on
    every host, which also makes it the code-only deploy run again) changes nothing."""
    *_, v2 = v2_deploy
    hosts = one_host_per_stack(v2_deploy[0])
    by_stack = {stack(h): h.backend.host for h in hosts}
    assert set(by_stack) == set(FAILING_ROUNDS[0]), by_stack
    assert {change for r in FAILING_ROUNDS for change in r.values()} == set(FAILING_CHANGES)
    before = {}
    for h in hosts:
        before[h.backend.host] = (current(h), get(h, "/"))
        assert before[h.backend.host][1][0] == "200", before
        start_request_loop(h, "mysite.test", port=443, tls=True, batch=10, pause=1.0)
    results = []
    # Batches of 10 requests a second apart: the runs, not the loops, get the CPU.
    try:
        for changes in FAILING_ROUNDS:
            # One run for a change every stack takes; else one run per stack, side by side.
            groups: dict = {}
            for name, change in changes.items():
                groups.setdefault(change, []).append(name)
            runs = [{"playbook": DEPLOY, "limit": ",".join(by_stack[name] for name in names),
                     "extra_vars": {"mysite_source_path": v2} | FAILING_CHANGES[change][0]}
                    for change, names in groups.items()]
            results += zip(groups, groups.values(), run_playbooks_at_once(runs), strict=True)
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    for change, stacks, result in results:
        text = output(result)
        assert result.returncode != 0, (change, stacks, text)
        assert FAILING_CHANGES[change][1] in text, (change, stacks, text)
        assert_recap(result, [by_stack[name] for name in stacks], failed=1)
    for h in hosts:
        report = reports[h.backend.host]
        assert report["requests"] > 0 and report["failures"] == 0, (h.backend.host, report)
        assert set(report["statuses"]) == {"200"}, (h.backend.host, report)
        # The same page every time (the loop keeps what follows a body's last ':').
        page = before[h.backend.host][1][1]
        assert set().union(*map(set, report["batches"])) == {page.rsplit(":", 1)[-1]}, (h.backend.host, report)
        assert (current(h), get(h, "/")) == before[h.backend.host]
    # On every host: the deploy of v2 again changes nothing, after the failed changes or none.
    again = run_playbook(DEPLOY, extra_vars={"mysite_source_path": v2})
    assert again.returncode == 0, output(again)
    assert_recap(again, changed=0, failed=0)


def test_rollback_goes_back_and_forth_on_every_stack(v2_deploy):
    """rollback.yml puts v1 back live on each stack (code and configuration), then, run
    again, v2; a request loop on each host sees no failed request."""
    _, before, _, _ = v2_deploy
    hosts = one_host_per_stack(v2_deploy[0])
    limit = ",".join(names_of(hosts))
    v2 = {h.backend.host: current(h) for h in hosts}
    for h in hosts:
        start_request_loop(h, "mysite.test", port=443, tls=True, batch=20, pause=0.5)
    try:
        back = run_playbook(ROLLBACK, limit=limit)
        pages = {h.backend.host: (current(h), get(h, "/")) for h in hosts}
        forth = run_playbook(ROLLBACK, limit=limit)
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    assert back.returncode == 0, output(back)
    assert forth.returncode == 0, output(forth)
    for h in hosts:
        live, (status, body) = pages[h.backend.host]
        assert live == before[h.backend.host], (live, before)
        assert status == "200" and "release 1" in body and "before v2" in body, body
        assert current(h) == v2[h.backend.host]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body, body
        report = reports[h.backend.host]
        assert report["requests"] > 0 and report["failures"] == 0, (h.backend.host, report)


# Each a value a user could put in the inventory, with what the refusal must show (the
# variable and the value's problem). One site.yml run checks them all: each case is a host of
# its own (an inventory alias of the nginx instance) with the scenario's variables and one bad value.
NGINX = {"wsgistack_stack": "nginx_uwsgi"}
APACHE = {"wsgistack_stack": "apache_daemon"}
PROD = {"django_app_environment_name": "prod"}
CERTBOT = {"wsgistack_tls": "certbot", "certbot_email": "ops@mysite.test", "certbot_agree_tos": True}
BAD_INPUTS = [
    ("stack", {"wsgistack_stack": "gunicorn"}, '(got wsgistack_stack "gunicorn"'),
    ("tls", {"wsgistack_tls": "letsencrypt"}, 'wsgistack_tls "letsencrypt")'),
    ("tls_external_prod", PROD | {"wsgistack_tls": "external", "wsgistack_tls_proxies": ["10.0.0.5"]},
     "wsgistack_tls: external (plain HTTP behind a proxy it does not manage) is for the other environments"),
    ("tls_external_no_proxies", {"wsgistack_tls": "external"}, "wsgistack_tls: external needs wsgistack_tls_proxies"),
    ("tls_external_proxy_name", {"wsgistack_tls": "external", "wsgistack_tls_proxies": ["proxy.mysite.test"]},
     '(got ["proxy.mysite.test"])'),
    ("prod_self_signed", PROD, "set wsgistack_tls: certbot"),
    ("prod_staging_ca", PROD | CERTBOT | {"certbot_acme_server": "https://acme-staging-v02.api.letsencrypt.org/directory"},
     "certbot_acme_server"),
    ("debug", {"django_app_debug": True}, "django_app_debug must be false"),
    ("secret_key", {"django_app_secret_key": "short-key"}, "django_app_secret_key must be at least 50 characters"),
    ("secret_key_placeholder", {"django_app_secret_key": "replace-with-64-random-characters" * 2},
     "django_app_secret_key still holds"),
    ("superuser_placeholder", {"django_app_superuser": {"username": "admin", "email": "admin@mysite.test",
                                                       "password": "replace-with-a-random-password"}},
     re.compile(r"django_app_superuser\.password(, \S+)* still holds? a placeholder value")),
    ("database_placeholder", {"django_app_database": {"engine": "postgresql", "name": "mysite", "user": "mysite",
                                                     "host": "db.mysite.test", "password": "replace-with-a-random-password"}},
     re.compile(r"django_app_database\.password(, \S+)* still holds? a placeholder value")),
    ("secret_environment_placeholder", {"django_app_secret_environment": {"API_TOKEN": "changeme"}},
     re.compile(r"django_app_secret_environment\.API_TOKEN(, \S+)* still holds? a placeholder value")),
    ("allowed_wildcard", {"django_app_allowed_hosts": ["*"]},
     'django_app_allowed_hosts must list the site host names (no wildcard "*")'),
    ("allowed_empty", {"django_app_allowed_hosts": []}, "django_app_allowed_hosts must list the site host names"),
    ("allowed_example", {"django_app_allowed_hosts": ["www.mysite.example.com"]}, "django_app_allowed_hosts still lists example"),
    ("certbot_example_email", PROD | CERTBOT | {"certbot_email": "ops@example.com"},
     "certbot_email ops@example.com is an example"),
    ("database_password", {"django_app_database": {"engine": "postgresql", "name": "mysite", "user": "mysite"}},
     "django_app_database is invalid: engine must be one of sqlite, postgresql; PostgreSQL needs name, user and password"),
    ("source_path", {"mysite_source_path": "/nonexistent/mysite"}, "django_app_source.path"),
    ("source_type", {"django_app_source": {"type": "svn", "path": "/tmp"}}, '(got {"path": "/tmp", "type": "svn"})'),
    ("settings_module", {"django_app_settings_module": "mysite/settings"}, '"django_app_settings_module": "mysite/settings"'),
    ("keep_releases", {"django_app_keep_releases": 0},
     "django_app_keep_releases must be at least 2 (the live release and the one to go back to; got 0)"),
    ("backups_keep", {"django_app_backups_keep": 0},
     "django_app_backups_keep at least 1 (the backup taken before the latest migrations; got 0)"),
    ("processes", {"django_app_processes": -1}, "django_app_processes 0 (one per core) or more (got -1)"),
    ("base_dir_relative", {"django_app_base_dir": "srv"},
     "django_app_base_dir must be an absolute path without a trailing slash (got 'srv')"),
    ("static_url", {"django_app_static_url": "static"},
     "django_app_media_url must start with '/' (or http(s)://) and end with '/' (got 'static'"),
    ("python_relative", {"django_app_python": "python3"}, "django_app_python an absolute path (got 'python3')"),
    ("name", {"django_app_name": "My Site"}, "django_app_name must be set to a lower-case identifier"),
    ("user", {"django_app_user": "Bad User"}, "user 'Bad User'"),
    ("health_path", {"django_app_health_check_path": "health/"}, "django_app_health_check_path must start with"),
    ("health_scheme", {"django_app_health_check_scheme": "ftp"}, "django_app_health_check_scheme"),
    ("nginx_worker_connections", NGINX | {"nginx_uwsgi_worker_connections": 8},
     "nginx_uwsgi_worker_connections must be at least 16 (got 8)"),
    ("nginx_keepalive_timeout", NGINX | {"nginx_uwsgi_keepalive_timeout": -1}, "(1 or more) are seconds (got -1, 30, 30)"),
    ("nginx_access_log_buffer", NGINX | {"nginx_uwsgi_access_log_buffer": "64 k"},
     'nginx_uwsgi_access_log_buffer must be an nginx size such as 64k, or empty (one write per request) (got "64 k")'),
    ("nginx_tls_protocols_old", NGINX | {"nginx_uwsgi_tls_protocols": ["TLSv1"]},
     'nginx_uwsgi_tls_protocols must list TLSv1.2 and/or TLSv1.3 (got ["TLSv1"])'),
    ("nginx_tls_ciphers", NGINX | {"nginx_uwsgi_tls_ciphers": "HIGH; MEDIUM"}, '(got "HIGH; MEDIUM")'),
    ("nginx_web_group", NGINX | {"nginx_uwsgi_web_group": "www data"},
     'nginx_uwsgi_web_group must be a group name such as www-data (got "www data")'),
    ("nginx_acme_webroot", NGINX | {"nginx_uwsgi_acme_webroot": "var/www/acme"}, "must be absolute paths (got var/www/acme,"),
    ("nginx_process_manager", NGINX | {"nginx_uwsgi_process_manager": "runit"},
     "value of nginx_uwsgi_process_manager must be one of"),
    ("nginx_uwsgi_install", NGINX | {"nginx_uwsgi_uwsgi_install": "apt"}, "value of nginx_uwsgi_uwsgi_install must be one of"),
    ("nginx_log_destination", NGINX | {"nginx_uwsgi_log_destination": "journal"},
     "value of nginx_uwsgi_log_destination must be one of"),
    ("site_client_max_body_size", NGINX | {"wsgistack_site_options": {"client_max_body_size": "10 m"}},
     'client_max_body_size must be an nginx size such as 10m, 512k or 0 (no limit) (got "10 m")'),
    ("site_static_expires", NGINX | {"wsgistack_site_options": {"static_expires": "30 days"}}, '(got "30 days")'),
    ("site_hsts_max_age", NGINX | {"wsgistack_site_options": {"hsts_max_age": -5}},
     "hsts_max_age must be 0 or more seconds (got -5)"),
    ("hsts_preload_short", NGINX | {"django_app_hsts_preload": True, "django_app_hsts_seconds": 600},
     "hsts_preload needs hsts_include_subdomains and an hsts_max_age of a year (31536000) or more, as the browsers preload"
     " lists require (got hsts_max_age 600"),
    ("site_uwsgi_read_timeout", NGINX | {"wsgistack_site_options": {"uwsgi_read_timeout": 0}},
     "uwsgi_read_timeout and uwsgi_send_timeout must be 1 or more seconds"),
    ("site_unknown_option", NGINX | {"wsgistack_site_options": {"max_body": "10m"}},
     "nginx_uwsgi_sites.max_body. Supported parameters include"),
    ("site_server_names", NGINX | {"wsgistack_site_options": {"server_names": ["mysite.test;"]}},
     'server_names must be host names without spaces, quotes, ; or braces (got ["mysite.test;"])'),
    ("app_buffer_size", NGINX | {"wsgistack_uwsgi_app_options": {"buffer_size": 100000}},
     "buffer_size must be between 4096 and 65535 bytes (got 100000)"),
    ("app_harakiri", NGINX | {"wsgistack_uwsgi_app_options": {"harakiri": -1}},
     "harakiri, max_requests, max_worker_lifetime, reload_on_rss and worker_reload_mercy must be 0"),
    ("app_environment", NGINX | {"wsgistack_uwsgi_app_options": {"environment": {"BAD KEY": "x"}}},
     'environment names must be letters, digits and _ (got ["BAD KEY"])'),
    ("app_process_manager", NGINX | {"wsgistack_uwsgi_app_options": {"process_manager": "runit"}},
     "value of process_manager must be one of"),
    ("app_socket", NGINX | {"wsgistack_uwsgi_app_options": {"socket": "relative.sock"}},
     "socket must be an absolute unix socket path or host:port"),
    ("supervisor_logfile_maxbytes", NGINX | {"supervisor_logfile_maxbytes": "50 MB"},
     'supervisor_logfile_maxbytes must be a size such as 50MB (got "50 MB")'),
    ("supervisor_socket_mode", NGINX | {"supervisor_unix_socket_mode": "0777"}, 'got "0777"'),
    ("supervisor_inet_password", NGINX | {"supervisor_inet_http_server_enabled": True}, "supervisor_inet_http_server_password"),
    ("apache_threads", APACHE | {"wsgistack_site_options": {"threads": 0}}, "threads 1 or more (got processes 2, threads 0)"),
    ("apache_tls_protocol", APACHE | {"apache_modwsgi_tls_protocol": "+SSLv3"}, '(got "+SSLv3", which enables SSLv3)'),
    ("apache_tls_ciphers", APACHE | {"apache_modwsgi_tls_ciphers": "HIGH MEDIUM"}, '(got "HIGH MEDIUM")'),
    ("apache_modules", APACHE | {"apache_modwsgi_modules": ["mod headers"]},
     'apache_modwsgi_modules and apache_modwsgi_disabled_modules must list module names such as headers (got ["mod headers"'),
    ("apache_request_timeout", APACHE | {"wsgistack_site_options": {"request_timeout": 0}},
     "request_timeout, startup_timeout, deadlock_timeout, graceful_timeout and shutdown_timeout must be 1"),
    ("apache_mode", APACHE | {"wsgistack_site_options": {"mode": "thread"}},
     "value of mode must be one of: daemon, embedded, got: thread"),
    ("apache_socket_prefix", APACHE | {"apache_modwsgi_socket_prefix": "run/wsgi"},
     "apache_modwsgi_socket_prefix and apache_modwsgi_self_signed_dir must be absolute paths"),
    ("certbot_email", CERTBOT | {"certbot_email": ""}, "certbot_email is required"),
    ("certbot_tos", CERTBOT | {"certbot_agree_tos": False}, "certbot_agree_tos"),
    ("site_static_expires_milliseconds", NGINX | {"wsgistack_site_options": {"static_expires": "10ms"}}, '(got "10ms")'),
    ("site_listen_host_name", NGINX | {"wsgistack_site_options": {"listen_addresses": ["web1.mysite.test"]}},
     'listen_addresses must be IP addresses (got ["web1.mysite.test"])'),
    ("site_allow_bad_prefix", NGINX | {"wsgistack_site_options": {"allow": ["10.0.0.0/40"]}},
     'allow must be IP addresses or CIDR networks (got ["10.0.0.0/40"])'),
    ("firewall_rule", {"wsgistack_firewall_rules": [{"name": "metrics", "port": 70000}]},
     "Each firewall_rules entry needs a name"),
    ("firewall_rule_sources", {"wsgistack_firewall_rules": [{"name": "metrics", "port": 9100, "sources": "10.0.0.5"}]},
     '"sources": "10.0.0.5"'),
    ("firewall_ssh_sources", {"firewall_ssh_sources": ["10.0.0.300/24"]}, "firewall_ssh_sources must list IP addresses"),
    # Another container, started without NET_ADMIN.
    ("firewall_no_net_admin", {"ansible_host": "site-no-net-admin"},
     "cannot load a firewall: its init system lacks CAP_NET_ADMIN (a container needs --cap-add NET_ADMIN)"),
    ("supervisor_inet_placeholder", NGINX | {"supervisor_inet_http_server_enabled": True,
                                             "supervisor_inet_http_server_username": "admin",
                                             "supervisor_inet_http_server_password": "changeme"},
     'not a placeholder such as "changeme"'),
]
# Unusual but valid values, checked in the same run: each passes its own checks (and stops
# only because the others failed).
GOOD_INPUTS = [
    ("tls_external_apache", APACHE | {"wsgistack_tls": "external", "wsgistack_tls_proxies": ["10.0.0.0/8", "fd00::5"]}),
    ("static_expires_modified", NGINX | {"wsgistack_site_options": {"static_expires": "modified +1d"}}),
    ("app_socket_ipv6", NGINX | {"wsgistack_uwsgi_app_options": {"socket": "[::1]:3031"}}),
    ("cdn_static_url", NGINX | {"django_app_static_url": "https://cdn.mysite.test/static/"}),
    ("apache_tls_protocol_one_word", APACHE | {"apache_modwsgi_tls_protocol": "TLSv1.3"}),
    ("apache_tls_protocol_old_mozilla", APACHE | {"apache_modwsgi_tls_protocol": "all -SSLv2 -SSLv3 -TLSv1 -TLSv1.1"}),
    ("apache_allowed_ipv6", APACHE | {"django_app_allowed_hosts": ["mysite.test", "[::1]"]}),
    ("firewall_ipv6_and_ranges", {"firewall_ssh_sources": ["0.0.0.0/0", "::/0"], "wsgistack_firewall_rules": [
        {"name": "metrics", "port": "9100-9102", "proto": "udp", "sources": ["fd00::/8", "10.0.0.5"]}]}),
    ("site_listen_ipv6_allow_networks", NGINX | {"wsgistack_site_options": {"listen_addresses": ["::1", "127.0.0.1"],
                                                                          "allow": ["fd00::/8", "10.0.0.0/8", "127.0.0.1"]}}),
]
# The cases one check reports together (it names every wrong value at once) share a host, their
# values merged: fewer hosts in the run, and each such check is shown to name them all. The
# other cases have a host each; so do the valid values, except those that go together.
BAD_INPUT_HOSTS = {
    "django-app-inputs": ["debug", "secret_key", "superuser_placeholder", "database_placeholder",
                          "secret_environment_placeholder", "allowed_wildcard", "source_path", "settings_module",
                          "keep_releases", "backups_keep", "processes", "base_dir_relative", "static_url",
                          "python_relative", "health_path"],
    "django-app-inputs-2": ["secret_key_placeholder", "database_password", "allowed_empty", "source_type"],
    "nginx-globals": ["nginx_worker_connections", "nginx_keepalive_timeout", "nginx_access_log_buffer",
                      "nginx_tls_protocols_old", "nginx_tls_ciphers", "nginx_web_group", "nginx_acme_webroot"],
    "nginx-argument-spec": ["nginx_process_manager", "nginx_uwsgi_install", "nginx_log_destination",
                            "site_unknown_option", "app_process_manager"],
    "nginx-site-options": ["site_client_max_body_size", "site_static_expires", "site_hsts_max_age",
                           "site_uwsgi_read_timeout", "site_server_names", "site_listen_host_name", "site_allow_bad_prefix"],
    "nginx-app-options": ["app_buffer_size", "app_harakiri", "app_environment"],
    "apache-globals": ["apache_tls_protocol", "apache_tls_ciphers", "apache_modules", "apache_socket_prefix"],
    "apache-site-options": ["apache_threads", "apache_request_timeout"],
    "firewall-inputs": ["firewall_rule", "firewall_ssh_sources"],
}
GOOD_INPUT_HOSTS = {
    "nginx-options": ["static_expires_modified", "app_socket_ipv6", "cdn_static_url", "site_listen_ipv6_allow_networks",
                      "firewall_ipv6_and_ranges"],
    "apache-options": ["tls_external_apache", "apache_tls_protocol_one_word", "apache_allowed_ipv6"],
}


def merged(values: list[dict]) -> dict:
    """The cases' inventory values as one host's: dicts under the same variable merged (site and
    app options); any other variable set by two cases must have the same value in both."""
    result: dict = {}
    for case in values:
        for key, value in case.items():
            if key in result and isinstance(value, dict) and isinstance(result[key], dict):
                assert not set(value) & set(result[key]), (key, value, result[key])
                result[key] = result[key] | value
            else:
                assert result.get(key, value) == value, (key, value, result[key])
                result[key] = value
    return result


def input_hosts(cases: list[tuple], hosts: dict[str, list[str]], prefix: str) -> dict[str, list[tuple]]:
    """Each host's name and its cases: the named groups, then a host per case left."""
    by_name = {case[0]: case for case in cases}
    grouped = {f"{prefix}-{name}": [by_name[case] for case in group] for name, group in hosts.items()}
    placed = {case for group in hosts.values() for case in group}
    assert placed <= set(by_name) and sum(map(len, hosts.values())) == len(placed), placed - set(by_name)
    alone = {f"{prefix}-{case[0]}".replace("_", "-"): [case] for case in cases if case[0] not in placed}
    assert not set(grouped) & set(alone), set(grouped) & set(alone)
    return grouped | alone



def test_every_bad_input_is_refused_in_the_first_play_with_nothing_changed(tmp_path):
    """site.yml with the instances and one more host per bad input (or per group of them that one
    check names together): every alias fails in the check play with its own messages (the
    aliases with valid values pass their own checks), the
    instances stop there too (nothing changed on any host: config files, `current`, server
    pids), and a request loop on each stack sees the same page all the while."""
    hosts = molecule_hosts()
    target = next(h for h in hosts if stack(h) == "nginx_uwsgi").backend.host
    connection = inventory_host_vars(target) | {"ansible_host": target}
    bad, good = input_hosts(BAD_INPUTS, BAD_INPUT_HOSTS, "bad"), input_hosts(GOOD_INPUTS, GOOD_INPUT_HOSTS, "good")
    aliases = {name: connection | merged([case[1] for case in cases]) for name, cases in (bad | good).items()}
    inventory = tmp_path / "bad_inputs.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "molecule": {"hosts": dict.fromkeys(aliases)}, "web": {"hosts": dict.fromkeys(aliases)},
        "nginx_uwsgi": {"hosts": aliases}}}}))
    paths = [f"{ROOT}/current/_config", f"{ROOT}/shared/wsgi", "/etc/nginx", "/etc/apache2", "/etc/uwsgi", "/etc/supervisor",
             "/etc/wsgistack"]
    state = {h: ([tree_checksums(h, p) for p in paths], current(h), server_pids(h)) for h in hosts}
    loops = one_host_per_stack(hosts)
    pages = {h.backend.host: get(h, "/") for h in loops}
    for h in loops:
        start_request_loop(h, "mysite.test", port=443, tls=True, batch=10, pause=1.0)
    subprocess.run(["docker", "run", "-d", "--name", "site-no-net-admin", "--cap-add", "SYS_ADMIN", "--cgroupns", "host",
                    "--security-opt", "seccomp=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
                    "--tmpfs", "/run/lock", "--tmpfs", "/tmp", os.environ.get("WSGISTACK_IMAGE_1", "wsgistack/systemd:debian12"),
                    "/lib/systemd/systemd"], check=True, capture_output=True)
    try:
        result = run_playbook("converge.yml", inventories=[str(inventory)])
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in loops}
        subprocess.run(["docker", "rm", "-f", "site-no-net-admin"], capture_output=True)
    text = output(result)
    assert result.returncode != 0, text
    assert "TASK [Prepare the release]" not in text and "TASK [Run PostgreSQL" not in text, text
    counters, messages = recap(result), failure_messages(result)
    assert sorted(counters) == sorted([*aliases, *names_of(hosts)]), text
    assert all(c["changed"] == 0 and c["failed"] == 1 for c in counters.values()), text
    wrong = {}
    for name, cases in bad.items():
        message = " ".join(messages.get(name, "").replace("\'\'", "\'").split())
        for case, _, shown in cases:
            found = shown.search(message) if isinstance(shown, re.Pattern) else " ".join(shown.split()) in message
            if not found or "Nothing was changed on any host" in message:
                wrong[case] = message[-600:]
    assert not wrong, wrong
    for name in good:
        message = messages.get(name, "")
        # Its only failure: the stop for the others.
        if message.count("fatal: [") != 1 or "Nothing was changed on any host" not in message:
            wrong[name] = message[-600:]
    assert not wrong, wrong
    for h in hosts:
        assert "Nothing was changed on any host" in messages[h.backend.host], messages[h.backend.host]
        assert ([tree_checksums(h, p) for p in paths], current(h), server_pids(h)) == state[h]
    for h in loops:
        report = reports[h.backend.host]
        assert report["requests"] > 0 and report["failures"] == 0 and set(report["statuses"]) == {"200"}, report
        assert set().union(*map(set, report["batches"])) == {pages[h.backend.host][1].rsplit(":", 1)[-1]}, report


def plain_http(address: str, path: str = "/") -> tuple[int, dict, str]:
    """A request from the controller to a host's port 80 for mysite.test, as a TLS-terminating
    proxy in front of it sends it: status, headers (lower-case names, values joined) and body."""
    connection = http.client.HTTPConnection(address, 80, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": "mysite.test"})
        response = connection.getresponse()
        headers: dict = {}
        for name, value in response.getheaders():
            headers.setdefault(name.lower(), []).append(value)
        return response.status, {k: ", ".join(v) for k, v in headers.items()}, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_tls_ended_by_a_proxy_in_front_and_back(v2_deploy):
    """wsgistack_tls: external with the controller as the proxy (wsgistack_tls_proxies), on every
    stack: the site answers the proxy on port 80 with its page and static files (no redirect:
    the app was told the request was HTTPS, behind_https_proxy) and the HSTS header for the proxy
    to pass on; another client gets 403 for both (the site's allow list) and the firewall admits
    port 80 from the proxy only; nothing serves the page on 443. The run also goes back to
    release 1, whose check after the switch goes through the web server as it still is (HTTPS).
    The next run, with the scenario's values and release 2 again, serves HTTPS again (port 80
    redirecting to it), its check after the switch through the plain HTTP the web server still
    served then."""
    hosts, _, _, v2 = v2_deploy
    live = {"mysite_source_path": v2}
    before = {h.backend.host: current(h) for h in hosts}
    addresses = {h.backend.host: network_address(h.backend.host) for h in hosts}
    proxies = sorted({controller for _, controller in addresses.values()})
    try:
        behind = run_playbook("converge.yml", extra_vars={"wsgistack_tls": "external", "wsgistack_tls_proxies": proxies})
        assert behind.returncode == 0, output(behind)
        for h in hosts:
            address, controller = addresses[h.backend.host]
            status, headers, body = plain_http(address)
            assert status == 200 and "release 1" in body, (h.backend.host, status, headers, body[:300])
            assert headers.get("strict-transport-security") == "max-age=63072000; includeSubDomains", headers
            assert plain_http(address, "/static/admin/css/base.css")[0] == 200
            # From the host's own address (not the proxy): refused, pages and static files alike.
            for path in ("/", "/static/admin/css/base.css"):
                own = h.run(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: mysite.test' http://{address}{path}").stdout
                assert own == "403", (path, own)
            # Nothing answers with the site on 443, in plain HTTP or TLS (the firewall aside).
            for url in ("http://127.0.0.1:443/", "https://127.0.0.1/"):
                code = h.run(f"curl -sk -o /dev/null -w '%{{http_code}}' -H 'Host: mysite.test' {url}").stdout
                assert code in ("000", "403"), (url, code)
            table = h.check_output("nft list table inet wsgistack_firewall")
            assert f"ip saddr {controller} tcp dport 80 accept" in table and "dport 443" not in table, table
            if stack(h) == "nginx_uwsgi":
                conf = h.file("/etc/nginx/sites-available/mysite.conf").content_string
                assert "uwsgi_param HTTPS on;" in conf and "443" not in conf, conf
                assert all(f"allow {client};" in conf for client in [*proxies, "127.0.0.1", "::1"]), conf
            else:
                conf = h.file("/etc/apache2/sites-available/mysite.conf").content_string
                # behind_https_proxy and the allow list of apache_modwsgi_sites.
                assert "HTTPS=on" in conf and "*:443" not in conf, conf
                assert f"Require ip {' '.join([*proxies, '127.0.0.1', '::1'])}" in conf, conf
            assert current(h) != before[h.backend.host]
    finally:
        back = run_playbook("converge.yml", extra_vars=live)
    assert back.returncode == 0, output(back)
    for h in hosts:
        address, _ = addresses[h.backend.host]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body, body[:300]
        assert (answers(address, 443), plain_http(address)[0]) == ("open", 301)
        assert current(h) == before[h.backend.host]
