"""db1 (PostgreSQL), web1 + web2 (nginx + uWSGI), lb1 (TLS, balancing): one database through
the balancer, rolling deploys without failed requests, a web host down, access to the database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from wsgistack_testlib import assert_recap, molecule_hosts, output, put_file, run_playbook, scenario_group_vars

testinfra_hosts = ["topology-lb1"]

INPUTS = scenario_group_vars()
DB_PASSWORD = INPUTS["django_app_database"]["password"]
DEPLOY = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "deploy.yml")
ROLLBACK = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "rollback.yml")
RESTORE_DB = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "restore-db.yml")


def hosts() -> dict:
    return {h.backend.host: h for h in molecule_hosts()}


def through_balancer(lb, path: str, extra: str = "") -> tuple[str, str]:
    result = lb.run(f"curl -sk --max-time 10 --resolve mysite.test:443:127.0.0.1 -w '\\n%{{http_code}}' {extra} "
                    f"https://mysite.test{path}")
    body, _, status = result.stdout.rpartition("\n")
    return status, body


def add_note(lb, text: str) -> None:
    """The site's own form, with its CSRF cookie and token, through the balancer."""
    jar = "/tmp/cookies.txt"
    _, form = through_balancer(lb, "/add/", f"-c {jar}")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    status, _ = through_balancer(
        lb, "/add/", f"-b {jar} -H 'Referer: https://mysite.test/add/' --data-urlencode csrfmiddlewaretoken={token} "
                     f"--data-urlencode 'text={text}'")
    assert status == "302", status


def served_by(lb, count: int = 20) -> set[str]:
    return {through_balancer(lb, "/health/")[1].split()[-1] for _ in range(count)}


def test_both_web_hosts_share_one_database_through_the_balancer(host):
    assert served_by(host) == {"web1", "web2"}
    add_note(host, "written through lb1")
    # Every web host reads it back from PostgreSQL on db1.
    for name in ("web1", "web2"):
        web = hosts()[f"topology-{name}"]
        code = "from notes.models import Note; print(Note.objects.filter(text='written through lb1').count())"
        out = web.check_output(f'/srv/mysite/bin/manage shell -c "{code}"')
        assert out.split()[-1] == "1"
    status, body = through_balancer(host, "/")
    assert status == "200" and "written through lb1" in body


def test_database_accepts_only_the_web_hosts(host):
    refused = host.run(f"PGPASSWORD={DB_PASSWORD} psql -h db1 -U mysite -d mysite -tAc 'select 1'")
    assert refused.rc != 0 and "no pg_hba.conf entry" in refused.stderr, refused.stderr
    web = hosts()["topology-web1"]
    allowed = web.run(f"PGPASSWORD={DB_PASSWORD} psql -h db1 -U mysite -d mysite -tAc 'select 1'")
    assert allowed.rc == 0 and allowed.stdout.strip() == "1", allowed.stderr
    # Passwords are stored as scram verifiers.
    db = hosts()["topology-db1"]
    stored = db.check_output("runuser -u postgres -- psql -tAc \"select rolpassword from pg_authid where rolname='mysite'\"")
    assert stored.startswith("SCRAM-SHA-256$")


def web_answer(client, target: str = "web1") -> tuple[str, str]:
    """A request for the site to a web host's backend port (plain HTTP), from another host."""
    result = client.run(f"curl -s --max-time 10 -H 'Host: mysite.test' -w '\\n%{{http_code}}' http://{target}/health/")
    body, _, status = result.stdout.rpartition("\n")
    return status, body


def test_backend_admits_only_the_balancers(host):
    """lb1 reaches web1's backend; db1 and a container that is not in the inventory, on the
    same network, get 403 from nginx before Django (which would take them for HTTPS) and are
    refused by PostgreSQL too. web1's site listens on its private address and loopback only."""
    status, body = web_answer(host)
    assert status == "200" and body.startswith("ok ") and body.endswith(" web1"), (status, body)
    db = hosts()["topology-db1"]
    status, body = web_answer(db)
    assert status == "403" and "ok " not in body, (status, body)
    web = hosts()["topology-web1"]
    address = web.check_output("hostname -i").split()[0]
    site = web.file("/etc/nginx/sites-enabled/mysite.conf").content_string
    assert re.findall(r"^\s*listen ([^;]+);", site, re.M) == [f"{address}:80", "127.0.0.1:80"], site
    lb_address = host.check_output("hostname -i").split()[0]
    assert re.findall(r"^\s*(allow|deny) ([^;]+);", site, re.M) == [
        ("allow", lb_address), ("allow", "127.0.0.1"), ("deny", "all")], site
    # A host on the network that the inventory does not list (the base image has Python only):
    # an HTTP request to web1, and a TLS startup message to db1's PostgreSQL.
    outsider = subprocess.run(
        ["docker", "run", "--rm", "--network", "wsgistack-topology", "--entrypoint", "python3",
         os.environ.get("WSGISTACK_IMAGE_1", "wsgistack/systemd:debian12"), "-c", OUTSIDER],
        capture_output=True, text=True, timeout=120)
    web_status, _, database = outsider.stdout.partition("\n")
    assert web_status == "403", outsider
    assert "no pg_hba.conf entry" in database, outsider


OUTSIDER = r"""
import socket, ssl, struct, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(urllib.request.Request("http://web1/health/", headers={"Host": "mysite.test"}),
                                 timeout=10).status)
except urllib.error.HTTPError as error:
    print(error.code)
sock = socket.create_connection(("db1", 5432), timeout=10)
sock.sendall(struct.pack("!ii", 8, 80877103))
if sock.recv(1) == b"S":
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    sock = context.wrap_socket(sock, server_hostname="db1")
params = b"user\0mysite\0database\0mysite\0\0"
sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
print(sock.recv(4096).decode(errors="replace"))
"""


def test_database_connection_is_tls_verified_against_the_deployment_ca(host):
    """The app's connection to db1 is TLS (pg_stat_ssl on the server) with sslmode verify-full
    and the CA that db1 keeps; a connection without TLS is refused, and verify-full against a
    name the server's certificate does not carry fails. The CA's key is root's on db1 only."""
    assert through_balancer(host, "/")[0] == "200"
    db = hosts()["topology-db1"]
    rows = db.check_output("runuser -u postgres -- psql -tAc \"select s.ssl, s.version from pg_stat_ssl s"
                           " join pg_stat_activity a using (pid) where a.usename = 'mysite'\"").split()
    assert rows and all(row.startswith("t|TLSv1.") for row in rows), rows
    ca_key = db.file("/etc/postgresql/wsgistack-tls/ca.key")
    assert (ca_key.user, ca_key.mode) == ("root", 0o600)
    web = hosts()["topology-web1"]
    # The app's own connection, as the server sees it.
    code = ("from django.db import connection; cursor = connection.cursor(); "
            "cursor.execute('select ssl from pg_stat_ssl where pid = pg_backend_pid()'); print(cursor.fetchone()[0])")
    assert web.check_output(f'/srv/mysite/bin/manage shell -c "{code}"').split()[-1] == "True"
    ca = web.check_output("readlink -f /srv/mysite/current/_config/db-ca.crt")
    assert web.check_output(f"cat {ca}") == db.check_output("cat /etc/postgresql/wsgistack-tls/ca.crt")
    address = db.check_output("hostname -i").split()[0]
    plain = web.run(f"PGPASSWORD={DB_PASSWORD} psql 'host=db1 sslmode=disable user=mysite dbname=mysite' -tAc 'select 1'")
    assert plain.rc != 0 and "no pg_hba.conf entry" in plain.stderr, plain.stderr
    wrong = web.run(f"PGPASSWORD={DB_PASSWORD} psql 'host=wrong.mysite.test hostaddr={address} sslmode=verify-full"
                    f" sslrootcert={ca} user=mysite dbname=mysite' -tAc 'select 1'")
    assert wrong.rc != 0 and "does not match host name" in wrong.stderr, wrong.stderr
    right = web.run(f"PGPASSWORD={DB_PASSWORD} psql 'host=db1 sslmode=verify-full sslrootcert={ca} user=mysite"
                    f" dbname=mysite' -tAc 'select 1'")
    assert right.rc == 0 and right.stdout.strip() == "1", right.stderr


def test_public_private_address_is_refused_before_any_change(host, tmp_path):
    """A public address for backend traffic, a host name and an address the host does not have are
    each refused in the first play, naming the variable and the way out; nothing changes (the web
    hosts' site files stay)."""
    web = hosts()["topology-web1"]
    site = web.check_output("sha256sum /etc/nginx/sites-available/mysite.conf")
    inventory = tmp_path / "public.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"topology-web1": {"wsgistack_private_address": "93.184.215.14"},
                                                       "topology-web2": {"wsgistack_private_address": "web2"},
                                                       "topology-lb1": {"wsgistack_private_address": "10.203.0.77"}}}}))
    result = run_playbook("converge.yml", inventories=[str(inventory)])
    text = output(result)
    assert result.returncode != 0, text
    assert "wsgistack_private_address of topology-web1 is 93.184.215.14, a public address" in text, text
    assert "wsgistack_private_address_public: true" in text, text
    assert 'wsgistack_private_address must be an IP address (got "web2")' in text, text
    # A private address the host does not have: nginx could not listen on it.
    assert "wsgistack_private_address of topology-lb1 is 10.203.0.77, which is not one of its addresses" in text, text
    # Every host fails in the first play (db1 too: pg_hba cannot admit "web2"), with nothing changed.
    assert_recap(result, changed=0, failed=1)
    assert "TASK [Prepare the release]" not in text and "TASK [Run PostgreSQL" not in text, text
    assert web.check_output("sha256sum /etc/nginx/sites-available/mysite.conf") == site



@pytest.mark.parametrize("limit", ["topology-web1", "lb", "db"])
def test_site_with_limit_changes_nothing_on_a_converged_topology(limit):
    """Operators run site.yml on one host or group: the balancer and pg_hba templates still know
    every host (facts of the hosts outside --limit are gathered), only the limited hosts run,
    and on a converged topology nothing changes."""
    expected = {"topology-web1": ["topology-web1"], "lb": ["topology-lb1"], "db": ["topology-db1"]}[limit]
    result = run_playbook("converge.yml", limit=limit)
    assert result.returncode == 0, output(result)
    assert_recap(result, expected, changed=0, failed=0, unreachable=0)

LOAD = r'''
import http.client, json, os, socket, ssl, sys, time
context = ssl._create_unverified_context()
class SNI(http.client.HTTPSConnection):
    def connect(self):
        self.sock = self._context.wrap_socket(socket.create_connection(("127.0.0.1", 443), self.timeout),
                                              server_hostname="mysite.test")
failures, statuses, bodies, count, deadline = 0, {}, {}, 0, time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and not os.path.exists("/tmp/stop-load"):
    count += 1
    try:
        conn = SNI("mysite.test", 443, timeout=10, context=context)
        conn.request("GET", "/health/", headers={"Host": "mysite.test"})
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status != 200:
            failures += 1
        bodies[body] = bodies.get(body, 0) + 1
    except Exception as exc:
        failures += 1
        statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
print(json.dumps({"requests": count, "failures": failures, "statuses": statuses, "bodies": bodies}))
'''


def under_load(lb, run):
    """run() while lb1 serves a bounded request loop (at most 300 s); its result and the loop's report."""
    lb.run("rm -f /tmp/stop-load /tmp/load.json")
    put_file(lb, "/tmp/load.py", LOAD)
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    loader = subprocess.Popen(
        ["ansible", "-i", inventory, "topology-lb1", "-m", "ansible.builtin.shell",
         "-a", "python3 /tmp/load.py 300 > /tmp/load.json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    result = run()
    time.sleep(2)
    lb.run("touch /tmp/stop-load")
    loader.wait(timeout=60)
    return result, json.loads(lb.file("/tmp/load.json").content_string)


@pytest.fixture(scope="module")
def rolling_deploy(host):
    """Deploy v2 with deploy.yml while lb1 serves a bounded request loop."""
    v2 = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", "v2")
    return under_load(host, lambda: run_playbook(DEPLOY, extra_vars={"mysite_source_path": v2}))


def test_rolling_deploy_under_load_fails_no_request(rolling_deploy):
    result, load = rolling_deploy
    assert result.returncode == 0, output(result)
    assert load["requests"] > 200, load
    assert load["failures"] == 0, load
    # Both releases answered during the roll, from both hosts.
    seen = set(load["bodies"])
    assert {"ok 1 web1", "ok 1 web2", "ok 2 web1", "ok 2 web2"} <= seen, seen


def test_migration_ran_once_before_the_first_switch_with_a_backup(rolling_deploy):
    result, _ = rolling_deploy
    text = output(result)
    changed = []
    for block in re.split(r"\nTASK \[", text):
        if block.startswith("wsgistack.django.django_app : Apply migrations]"):
            changed += re.findall(r"^changed: \[([\w.-]+)\]", block, re.M)
    assert changed == ["topology-web1"], text
    web1 = hosts()["topology-web1"]
    dumps = web1.check_output("ls /srv/mysite/shared/backups/").split()
    assert any("-before-" in name for name in dumps), dumps
    dump = web1.file(f"/srv/mysite/shared/backups/{sorted(dumps)[-1]}")
    assert dump.user == "root" and dump.mode == 0o600 and dump.size > 0


def test_data_written_before_the_deploy_is_still_there(rolling_deploy, host):
    status, body = through_balancer(host, "/")
    assert status == "200" and "release 2" in body and "written through lb1" in body


def test_site_answers_with_one_web_host_stopped(host):
    subprocess.run(["docker", "stop", "-t", "5", "topology-web2"], check=True, capture_output=True)
    try:
        statuses = [through_balancer(host, "/health/")[0] for _ in range(20)]
        assert statuses == ["200"] * 20, statuses
        assert served_by(host, 10) == {"web1"}
    finally:
        subprocess.run(["docker", "start", "topology-web2"], check=True, capture_output=True)
    # web2 comes back by itself (systemd, supervisor, uWSGI) and takes requests again.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and served_by(host, 10) != {"web1", "web2"}:
        time.sleep(2)
    assert served_by(host, 20) == {"web1", "web2"}


def test_rollback_rolls_one_web_host_at_a_time_without_failed_requests(rolling_deploy, host):
    """rollback.yml after the rolling deploy: v1 goes back live on web1, then on web2 (one
    batch each), each out of the balancer while it switches; no request through lb1 fails."""
    result, load = under_load(host, lambda: run_playbook(ROLLBACK))
    text = output(result)
    assert result.returncode == 0, text
    assert text.count("PLAY [Roll back the Django project]") == 2, text
    assert load["requests"] > 50 and load["failures"] == 0, load
    assert {"ok 2 web1", "ok 2 web2", "ok 1 web1", "ok 1 web2"} <= set(load["bodies"]), set(load["bodies"])
    assert served_by(host) == {"web1", "web2"}
    status, body = through_balancer(host, "/")
    assert status == "200" and "release 1" in body and "written through lb1" in body


def test_restore_db_puts_the_postgresql_backup_back_once(rolling_deploy, host):
    """The dump web1 took before v2 migrated holds the note written through lb1. With that
    note deleted, restore-db.yml puts the dump back (once, from web1, for the one database)
    with the release it belongs to (v1, live again since the rollback) on both web hosts:
    the note is back, no request through lb1 failed, and the database as it was just before
    the restore is a dump too."""
    web1 = hosts()["topology-web1"]
    backups = "/srv/mysite/shared/backups"
    dump = web1.check_output(f"ls -t {backups} | grep -v before-restore | grep '\\.dump$' | head -1")
    found = re.fullmatch(r"\d{8}T\d{6}Z-([0-9a-f]{12}-[0-9a-f]{8})-before-[0-9a-f-]+\.dump", dump)
    assert found, dump
    for web in ("topology-web1", "topology-web2"):
        assert hosts()[web].check_output("readlink /srv/mysite/current") == f"/srv/mysite/releases/{found.group(1)}"
    web1.check_output("/srv/mysite/bin/manage shell -c "
                      "\"from notes.models import Note; Note.objects.filter(text__startswith='written through lb1').delete()\"")
    assert "written through lb1" not in through_balancer(host, "/")[1]
    result, load = under_load(host, lambda: run_playbook(RESTORE_DB, extra_vars={"backup": dump}))
    text = output(result)
    assert result.returncode == 0, text
    assert load["requests"] > 20 and load["failures"] == 0, load
    task = re.escape("TASK [wsgistack.django.django_app : Replace the database's contents with the backup]")
    restored = re.search(task + r".*?\n\n", text, re.S)
    assert restored and sorted(re.findall(r"^(\w+): \[([\w.-]+)\]", restored.group(0), re.M)) == [
        ("changed", "topology-web1"), ("skipping", "topology-web2")], text
    status, body = through_balancer(host, "/")
    assert status == "200" and "release 1" in body and "written through lb1" in body, body
    saved = web1.check_output(f"ls -t {backups}/*-before-restore.dump | head -1")
    assert (web1.file(saved).user, web1.file(saved).mode) == ("root", 0o600) and web1.file(saved).size > 0


def database_shows(db) -> dict:
    """The settings PostgreSQL runs with, and its main process."""
    names = ("work_mem", "log_min_duration_statement", "max_connections", "shared_buffers")
    values = [db.check_output(f"runuser -u postgres -- psql -tAc 'show {name}'") for name in names]
    started = db.check_output("runuser -u postgres -- psql -tAc 'select pg_postmaster_start_time()'")
    return dict(zip(names, values, strict=True)) | {"started": started}


def test_database_settings_change_and_go_back(host):
    """site.yml on db1 alone (--limit): settings PostgreSQL reloads change while lb1's request
    loop gets only 200s, without a restart; max_connections and shared_buffers restart the
    server, after which the site answers; the scenario's run puts everything back."""
    db = hosts()["topology-db1"]
    before = database_shows(db)
    reload_only = {"postgresql_settings": {"work_mem": "8MB", "log_min_duration_statement": "250"}}
    result, load = under_load(host, lambda: run_playbook("converge.yml", extra_vars=reload_only, limit="topology-db1"))
    assert result.returncode == 0, output(result)
    reloaded = database_shows(db)
    assert load["requests"] > 20 and load["failures"] == 0, load
    restart = run_playbook("converge.yml", extra_vars={"postgresql_max_connections": 150, "postgresql_shared_buffers": "48MB"},
                           limit="topology-db1")
    assert restart.returncode == 0, output(restart)
    restarted = database_shows(db)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and through_balancer(host, "/")[0] != "200":
        time.sleep(1)
    assert through_balancer(host, "/")[0] == "200"
    back = run_playbook("converge.yml", limit="topology-db1")
    assert back.returncode == 0, output(back)
    assert reloaded == before | {"work_mem": "8MB", "log_min_duration_statement": "250ms"}, (before, reloaded)
    # work_mem follows from the memory and max_connections unless postgresql_settings sets it.
    assert {key: restarted[key] for key in ("max_connections", "shared_buffers", "log_min_duration_statement")} == {
        "max_connections": "150", "shared_buffers": "48MB",
        "log_min_duration_statement": before["log_min_duration_statement"]}, (before, restarted)
    assert restarted["started"] != before["started"]
    assert database_shows(db) | {"started": before["started"]} == before
    assert through_balancer(host, "/")[0] == "200"
