"""db1 (PostgreSQL, Redis), web1 + web2 (nginx + uWSGI, a Celery worker each), lb1 (TLS,
balancing): one database through the balancer, tasks on the workers through db1's Redis, rolling
deploys without failed requests that move each host's worker with its release, a web host down,
access to the database and to Redis."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from wsgistack_testlib import (
    answer_of,
    assert_recap,
    molecule_hosts,
    output,
    put_file,
    recap,
    run_playbook,
    scenario_group_vars,
    site_get,
    start_request_loop,
    stop_request_loop,
    unit_pids,
    wait_for,
)

testinfra_hosts = ["topology-lb1"]

INPUTS = scenario_group_vars()
DB_PASSWORD = INPUTS["django_app_database"]["password"]
DEPLOY = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "deploy.yml")
ROLLBACK = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "rollback.yml")
RESTORE_DB = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "restore-db.yml")
REDIS_PASSWORD = INPUTS["redis_password"]
WORKER = "django-mysite-worker-celery@1.service"
PROGRAM = "django-mysite-worker-celery"


def hosts() -> dict:
    return {h.backend.host: h for h in molecule_hosts()}


def through_balancer(lb, path: str, extra: str = "") -> tuple[str, str]:
    return site_get(lb, "mysite.test", path, extra)


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


def supervised_worker(web2) -> int | None:
    """The pid of web2's Celery worker, a supervisor program, when it runs."""
    main = re.search(r"\sRUNNING\s+pid (\d+),", web2.run(f"supervisorctl status {PROGRAM}:*").stdout)
    return int(main.group(1)) if main else None


def worker_pids() -> dict[str, set[int]]:
    """Each web host's Celery worker processes (main process and pool): web1's systemd unit,
    web2's supervisor program."""
    web2 = hosts()["topology-web2"]
    main = supervised_worker(web2)
    pool = web2.run(f"ps -o pid= --ppid {main}").stdout.split() if main else []
    return {"web1": unit_pids(hosts()["topology-web1"], WORKER),
            "web2": {main, *map(int, pool)} if main else set()}


def tasks_through_balancer(lb, text: str, release: str, count: int = 6) -> set[str]:
    """Tasks submitted through lb1 (either web host's site) each run on a worker process of a web
    host with the given release; returns the web hosts whose workers ran them."""
    pids = worker_pids()
    ran_on = set()
    for number in range(count):
        status, body = through_balancer(lb, f"/task?text={text}-{number}", "--max-time 30")
        assert status == "200", (status, body)
        match = re.fullmatch(rf"task: {text}-{number} from release {release} \(pid (\d+) on (web[12])\)", body.strip())
        assert match, body
        assert int(match.group(1)) in pids[match.group(2)], (body, pids)
        ran_on.add(match.group(2))
    return ran_on


def redis_answer(client) -> str:
    """What db1's Redis answers a PING without the password, from another host; "timeout" when
    nothing answers."""
    probe = ("import socket\ntry:\n    s = socket.create_connection(('db1', 6379), timeout=3)\n"
             "except TimeoutError:\n    print('timeout')\nelse:\n    s.settimeout(5)\n    s.sendall(b'PING\\r\\n')\n"
             "    print(s.recv(200).decode().strip())\n")
    return client.check_output(f"python3 -c {shlex.quote(probe)}")


def test_tasks_through_the_balancer_run_on_the_web_hosts_workers_through_redis_on_db1(host):
    """Tasks submitted through lb1 run on the web hosts' workers, which take them from db1's Redis:
    both web hosts are its clients, it listens on loopback and db1's private address only, and
    asks for the password."""
    assert tasks_through_balancer(host, "first", "1")
    db = hosts()["topology-db1"]
    addresses = {name: hosts()[f"topology-{name}"].check_output("hostname -i").split()[0] for name in ("web1", "web2", "db1")}
    clients = db.check_output(f"REDISCLI_AUTH={REDIS_PASSWORD} redis-cli client list")
    assert {f"addr={addresses['web1']}:", f"addr={addresses['web2']}:"} <= set(re.findall(r"addr=[\d.]+:", clients)), clients
    listening = set(db.check_output("ss -ltnH 'sport = :6379' | awk '{print $4}'").split())
    assert listening - {"[::1]:6379"} == {f"{addresses['db1']}:6379", "127.0.0.1:6379"}, listening
    assert redis_answer(hosts()["topology-web1"]).startswith("-NOAUTH"), redis_answer(hosts()["topology-web1"])


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
    # lb1's packets are dropped by db1's firewall (see below for pg_hba.conf on its own).
    assert "timeout expired" in database_answer(host)
    assert database_answer(hosts()["topology-web1"]) == "1"
    # Passwords are stored as scram verifiers.
    db = hosts()["topology-db1"]
    stored = db.check_output("runuser -u postgres -- psql -tAc \"select rolpassword from pg_authid where rolname='mysite'\"")
    assert stored.startswith("SCRAM-SHA-256$")


def web_answer(client, target: str = "web1") -> tuple[str, str]:
    """A request for the site to a web host's backend port (plain HTTP), from another host;
    status 000 when the connection is not even answered."""
    return answer_of(client, f"--connect-timeout 3 -H 'Host: mysite.test' http://{target}/health/")


def database_answer(client) -> str:
    """What db1's PostgreSQL answers a login with the app's password, from another host."""
    result = client.run(f"PGCONNECT_TIMEOUT=3 PGPASSWORD={DB_PASSWORD} psql -h db1 -U mysite -d mysite -tAc 'select 1'")
    return result.stdout.strip() if result.rc == 0 else result.stderr


def outsider(probes: list[tuple[str, str, int]]) -> list[str]:
    """What a container that is not in the inventory, on the same network, gets from each probe
    (kind, host, port): an HTTP status for the site, PostgreSQL's first answer, a server's first
    bytes, or "timeout" when nothing answers (the base image has Python only)."""
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "wsgistack-topology", "--entrypoint", "python3",
         os.environ.get("WSGISTACK_IMAGE_1", "wsgistack/systemd:debian12"), "-c", OUTSIDER, json.dumps(probes)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result
    return json.loads(result.stdout)


OUTSIDER = r"""
import json, socket, ssl, struct, sys, urllib.error, urllib.request
def probe(kind, host, port):
    try:
        sock = socket.create_connection((host, port), timeout=3)
    except TimeoutError:
        return "timeout"
    except OSError as error:
        return f"refused: {error}"
    sock.settimeout(10)
    if kind == "http":
        sock.close()
        try:
            return str(urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/health/",
                                                                     headers={"Host": "mysite.test"}), timeout=10).status)
        except urllib.error.HTTPError as error:
            return str(error.code)
    if kind == "redis":
        sock.sendall(b"PING\r\n")
    if kind == "pg":
        sock.sendall(struct.pack("!ii", 8, 80877103))
        if sock.recv(1) == b"S":
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=host)
        params = b"user\0mysite\0database\0mysite\0\0"
        sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    return sock.recv(4096).decode(errors="replace")
print(json.dumps([probe(*p) for p in json.loads(sys.argv[1])]))
"""

# Every path the topology does not use: db1 and an outsider to web1's backend, lb1 and an outsider
# to db1's PostgreSQL and Redis. lb1 -> web1, web1 -> db1's PostgreSQL and Redis are the paths it uses.
OUTSIDER_PROBES = [("http", "web1", 80), ("pg", "db1", 5432), ("redis", "db1", 6379)]


def unused_paths(lb) -> dict:
    db = hosts()["topology-db1"]
    web_status, database, redis = outsider(OUTSIDER_PROBES)
    return {"db1 -> web1": web_answer(db), "lb1 -> db1": database_answer(lb), "lb1 -> db1 redis": redis_answer(lb),
            "outsider -> web1": web_status, "outsider -> db1": database, "outsider -> db1 redis": redis}


def used_paths(lb) -> tuple:
    """lb1's request to web1's backend (its status, and whether web1's app answered it), web1's
    query to db1, and what db1's Redis answers web1 without the password."""
    web = hosts()["topology-web1"]
    status, body = web_answer(lb)
    return status, body.startswith("ok ") and body.endswith(" web1"), database_answer(web), redis_answer(web)[:7]


def test_firewall_and_allow_lists_each_refuse_every_path_the_topology_does_not_use(host):
    """lb1 reaches web1's backend and web1 reaches db1. Every other path is refused twice: the
    firewall drops it (nothing answers), and with the firewalls of web1 and db1 stopped, nginx's
    allow-list (403 before Django, which would take the request for HTTPS) and pg_hba.conf still
    refuse it; with those allow-lists opened by hand, the firewall alone still drops it. The next
    site.yml run puts back what was changed by hand."""
    web, db = hosts()["topology-web1"], hosts()["topology-db1"]
    used = ("200", True, "1", "-NOAUTH")
    assert used_paths(host) == used
    both = unused_paths(host)
    assert both["db1 -> web1"] == ("000", "") and both["outsider -> web1"] == "timeout", both
    assert "timeout expired" in both["lb1 -> db1"] and both["outsider -> db1"] == "timeout", both
    assert both["lb1 -> db1 redis"] == "timeout" and both["outsider -> db1 redis"] == "timeout", both
    for h in (web, db):
        table = h.check_output("nft list table inet wsgistack_firewall")
        assert "policy drop;" in table, table
        assert h.service("wsgistack-firewall").is_enabled
        rules = h.file("/etc/wsgistack/firewall.nft")
        assert (rules.user, rules.mode) == ("root", 0o600)
    lb_address = host.check_output("hostname -i").split()[0]
    assert f"ip saddr {lb_address} tcp dport 80 accept" in web.check_output("nft list table inet wsgistack_firewall")
    # The services' own allow-lists, with the firewalls stopped.
    for h in (web, db):
        h.check_output("systemctl stop wsgistack-firewall")
    try:
        service_only = unused_paths(host)
        assert used_paths(host) == used
    finally:
        for h in (web, db):
            h.check_output("systemctl start wsgistack-firewall")
    assert service_only["db1 -> web1"][0] == "403" and "ok " not in service_only["db1 -> web1"][1], service_only
    assert service_only["outsider -> web1"] == "403", service_only
    assert "no pg_hba.conf entry" in service_only["lb1 -> db1"], service_only
    assert "no pg_hba.conf entry" in service_only["outsider -> db1"], service_only
    # Redis, reachable without the firewall, still wants its password.
    assert service_only["lb1 -> db1 redis"].startswith("-NOAUTH"), service_only
    assert service_only["outsider -> db1 redis"].startswith("-NOAUTH"), service_only
    site = web.file("/etc/nginx/sites-enabled/mysite.conf").content_string
    address = web.check_output("hostname -i").split()[0]
    assert re.findall(r"^\s*listen ([^;]+);", site, re.M) == [f"{address}:80", "127.0.0.1:80"], site
    assert re.findall(r"^\s*(allow|deny) ([^;]+);", site, re.M) == [
        ("allow", lb_address), ("allow", "127.0.0.1"), ("deny", "all")], site
    # The firewalls alone, with the allow-lists opened by hand.
    web.check_output(r"sed -i -E '/^\s*(allow|deny) /d' /etc/nginx/sites-available/mysite.conf"
                     " && nginx -t && systemctl reload nginx")
    hba = db.check_output("runuser -u postgres -- psql -tAc 'show hba_file'")
    db.check_output(f"echo 'hostssl all all 0.0.0.0/0 scram-sha-256' >> {hba}"
                    " && runuser -u postgres -- psql -tAc 'select pg_reload_conf()'")
    firewall_only = unused_paths(host)
    assert used_paths(host) == used
    assert firewall_only == both, firewall_only
    assert "deny" not in web.file("/etc/nginx/sites-enabled/mysite.conf").content_string
    # The next run puts both allow-lists back (and nothing else changes).
    healed = run_playbook("converge.yml", limit="topology-web1:topology-db1", tags="nginx_uwsgi,postgresql,firewall")
    assert healed.returncode == 0, output(healed)
    assert recap(healed)["topology-web1"]["changed"] > 0 and recap(healed)["topology-db1"]["changed"] > 0, output(healed)
    assert web.file("/etc/nginx/sites-enabled/mysite.conf").content_string == site
    assert "0.0.0.0/0" not in db.file(hba).content_string
    service_check = web_answer(db)[0]
    assert service_check == "000" and used_paths(host) == used


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


@pytest.fixture
def newer_database_server():
    """A PostgreSQL server newer than the web hosts' client (Debian 13's, on the scenario's
    network as pg-newer), with the app's user and an empty database."""
    name = "topology-pg-newer"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, "--hostname", "pg-newer", "--network", "wsgistack-topology",
                    "--network-alias", "pg-newer", "--cap-add", "SYS_ADMIN", "--cgroupns", "host",
                    "--security-opt", "seccomp=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
                    os.environ.get("WSGISTACK_IMAGE_2", "wsgistack/systemd:debian13"), "/lib/systemd/systemd"],
                   check=True, capture_output=True)
    setup = (
        "apt-get install -y -q postgresql >/dev/null && version=$(ls /etc/postgresql) && "
        "echo \"listen_addresses = '*'\" > /etc/postgresql/$version/main/conf.d/listen.conf && "
        "echo 'hostssl all all 0.0.0.0/0 scram-sha-256' >> /etc/postgresql/$version/main/pg_hba.conf && "
        "systemctl restart postgresql && "
        f"runuser -u postgres -- psql -c \"create user mysite password '{DB_PASSWORD}'\" && "
        "runuser -u postgres -- createdb -O mysite mysite && echo $version")
    try:
        version = subprocess.run(["docker", "exec", name, "sh", "-c", setup], capture_output=True, text=True,
                                 timeout=600, check=True).stdout.split()[-1]
        yield version
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_backup_from_a_newer_database_server_stops_before_migrating_and_says_why(host, newer_database_server):
    """web1's PostgreSQL client is older than the server its app is pointed at, and no newer
    client can be installed from the host's package sources: the deploy stops at the backup,
    before migrating, naming both versions and the two ways out (no password shown); the live
    release, its database and the site through lb1 are as before."""
    web = hosts()["topology-web1"]
    client = web.check_output("ls /usr/lib/postgresql")
    live = web.check_output("readlink /srv/mysite/current")
    newer = INPUTS["django_app_database"] | {"host": "pg-newer"}
    result, load = under_load(host, lambda: run_playbook(
        DEPLOY, limit="topology-web1", extra_vars={"django_app_database": newer, "django_app_database_ca_certificate": ""}))
    text = output(result)
    assert result.returncode != 0, text
    assert (f"The database server runs PostgreSQL {newer_database_server}, and the newest pg_dump on topology-web1"
            f" is {client} (pg_dump cannot dump a newer server)") in text, text
    assert f"Install postgresql-client-{newer_database_server} on the host" in text, text
    assert "django_app_backup_before_migrate: false" in text and DB_PASSWORD not in text, text
    assert "TASK [wsgistack.django.django_app : Apply migrations]" not in text, text
    assert web.check_output("readlink /srv/mysite/current") == live
    assert load["requests"] > 10 and load["failures"] == 0, load
    tables = subprocess.run(["docker", "exec", "topology-pg-newer", "runuser", "-u", "postgres", "--", "psql", "-tAc",
                             "select count(*) from pg_tables where schemaname = 'public'", "mysite"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert tables == "0"


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



def network_address(container: str) -> tuple[str, str]:
    """A container's address on the scenario's network, and that network's gateway: the address
    the controller's connections come from."""
    found = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container],
                           capture_output=True, text=True, check=True)
    network = json.loads(found.stdout)["wsgistack-topology"]
    return network["IPAddress"], network["Gateway"]


@pytest.fixture(scope="module")
def over_ssh(host, tmp_path_factory):
    """An inventory in which Ansible reaches lb1 over SSH as a user who becomes root with sudo
    (so facts are root's, without SSH_CONNECTION), a new connection for every task."""
    directory = tmp_path_factory.mktemp("ssh")
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    host.check_output("id deploy || useradd -m -s /bin/bash deploy; install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh"
                      " && echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy && systemctl enable --now ssh")
    put_file(host, "/home/deploy/.ssh/authorized_keys", (directory / "id_ed25519.pub").read_text(), mode="0600")
    host.check_output("chown deploy:deploy /home/deploy/.ssh/authorized_keys")
    address, gateway = network_address("topology-lb1")
    inventory = directory / "ssh.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"topology-lb1": {
        "ansible_connection": "ssh", "ansible_host": address, "ansible_user": "deploy", "ansible_become": True,
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_args": "-o ControlMaster=no -o ControlPersist=no",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}}}))
    return str(inventory), gateway


def ssh_logins(lb) -> int:
    return int(lb.check_output("journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey for deploy' || true"))


def test_firewall_keeps_ansibles_ssh_connection_through_rule_changes(host, over_ssh):
    """site.yml on lb1 over SSH (as a user with sudo, a new connection for each task): SSH
    restricted to the controller's address and a new port opened, then everything back; every
    connection of both runs gets through, while a host that is not the controller gets no SSH
    answer. SSH sources that leave out the controller are refused in the first play, naming the
    variable and the address, with nothing changed."""
    inventory, controller = over_ssh
    assert outsider([("tcp", "lb1", 22)])[0].startswith("SSH-2.0-")
    logins = ssh_logins(host)
    # The firewall's own runs (its tag; the first plays always run).
    restricted = run_playbook("converge.yml", limit="topology-lb1", inventories=[inventory], tags="firewall", extra_vars={
        "firewall_ssh_sources": [controller],
        "wsgistack_firewall_rules": [{"name": "metrics", "port": 9100, "sources": ["10.9.0.0/16", "fd00:9::/64"]}]})
    text = output(restricted)
    assert restricted.returncode == 0, text
    assert_recap(restricted, ["topology-lb1"], failed=0, unreachable=0)
    # Ansible's tasks came in over SSH, each on its own connection, before and after the rules changed.
    assert ssh_logins(host) - logins > 20
    assert recap(restricted)["topology-lb1"]["changed"] > 0, text
    table = host.check_output("nft list table inet wsgistack_firewall")
    assert f"ip saddr {controller} tcp dport 22 accept" in table, table
    assert "ip6 saddr fd00:9::/64 tcp dport 9100 accept" in table, table
    assert outsider([("tcp", "lb1", 22)]) == ["timeout"]
    back = run_playbook("converge.yml", limit="topology-lb1", inventories=[inventory], tags="firewall")
    assert back.returncode == 0, output(back)
    assert_recap(back, ["topology-lb1"], failed=0, unreachable=0)
    assert "9100" not in host.check_output("nft list table inet wsgistack_firewall")
    assert outsider([("tcp", "lb1", 22)])[0].startswith("SSH-2.0-")
    before = host.check_output("sha256sum /etc/wsgistack/firewall.nft")
    locked_out = run_playbook("converge.yml", limit="topology-lb1", inventories=[inventory], tags="firewall",
                              extra_vars={"firewall_ssh_sources": ["192.0.2.0/24"]})
    text = output(locked_out)
    assert locked_out.returncode != 0, text
    assert (f"firewall_ssh_sources (192.0.2.0/24) does not include {controller}, the address Ansible connects"
            " to topology-lb1 from") in text, text
    assert_recap(locked_out, ["topology-lb1"], changed=0, failed=1)
    assert host.check_output("sha256sum /etc/wsgistack/firewall.nft") == before


def test_site_with_limit_changes_nothing_on_a_converged_topology():
    """Operators run site.yml on some hosts or groups: the balancer and pg_hba templates still
    know every host (facts of web2, outside --limit, are gathered), only the limited hosts run,
    and on a converged topology nothing changes."""
    # The roles that render those templates (the first plays, which gather the facts, always run).
    result = run_playbook("converge.yml", limit="topology-web1,lb,db", tags="nginx_uwsgi,postgresql")
    assert result.returncode == 0, output(result)
    assert_recap(result, ["topology-web1", "topology-lb1", "topology-db1"], changed=0, failed=0, unreachable=0)


def under_load(lb, run):
    """run() while lb1 serves a request loop for the site's health path; its result and the
    loop's report, with `bodies`: every answer the loop saw (release and web host)."""
    start_request_loop(lb, "mysite.test", path="/health/", port=443, tls=True, batch=50)
    result = run()
    time.sleep(2)
    load = stop_request_loop(lb)
    load["bodies"] = sorted({body for batch in load["batches"] for body in batch})
    return result, load


@pytest.fixture(scope="module")
def rolling_deploy(host):
    """Deploy v2 with deploy.yml while lb1 serves a bounded request loop."""
    v2 = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", "v2")
    workers_before = worker_pids()
    result, load = under_load(host, lambda: run_playbook(DEPLOY, extra_vars={"mysite_source_path": v2}))
    load["workers_before"] = workers_before
    return result, load


def test_rolling_deploy_under_load_fails_no_request(rolling_deploy):
    result, load = rolling_deploy
    assert result.returncode == 0, output(result)
    assert load["requests"] > 200, load
    assert load["failures"] == 0, load
    # Both releases answered during the roll, from both hosts.
    seen = set(load["bodies"])
    assert {"ok 1 web1", "ok 1 web2", "ok 2 web1", "ok 2 web2"} <= seen, seen


def test_rolling_deploy_moves_each_web_hosts_worker_to_the_new_release(rolling_deploy, host):
    """After the roll, tasks run on release 2, and no worker process started before it is left on
    either web host."""
    result, load = rolling_deploy
    assert result.returncode == 0, output(result)
    assert tasks_through_balancer(host, "after-deploy", "2")
    now = worker_pids()
    for name, before in load["workers_before"].items():
        assert before and now[name] and not now[name] & before, (name, before, now[name])


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
    # Its firewall came back with it (the unit loads it at boot), and its worker on the live release.
    web2 = hosts()["topology-web2"]
    assert wait_for(lambda: supervised_worker(web2), timeout=60)
    main = supervised_worker(web2)
    assert web2.check_output(f"ps -o user= -p {main}") == "mysite"
    assert web2.check_output(f"readlink /proc/{main}/cwd") == web2.check_output("readlink -f /srv/mysite/current")
    assert "policy drop;" in web2.check_output("nft list table inet wsgistack_firewall")
    assert outsider([("http", "web2", 80)]) == ["timeout"]


def test_rollback_rolls_one_web_host_at_a_time_without_failed_requests(rolling_deploy, host):
    """rollback.yml after the rolling deploy: v1 goes back live on web1, then on web2 (one
    batch each), each out of the balancer while it switches; no request through lb1 fails."""
    workers_before = worker_pids()
    result, load = under_load(host, lambda: run_playbook(ROLLBACK))
    text = output(result)
    assert result.returncode == 0, text
    assert text.count("PLAY [Roll back the Django project]") == 2, text
    # The workers went back with their host's release.
    assert tasks_through_balancer(host, "after-rollback", "1")
    assert all(not pids & workers_before[name] for name, pids in worker_pids().items()), (workers_before, worker_pids())
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
    # The database's own runs, as operators tune it (its tag; the first plays always run).
    result, load = under_load(host, lambda: run_playbook("converge.yml", extra_vars=reload_only, limit="topology-db1",
                                                         tags="postgresql"))
    assert result.returncode == 0, output(result)
    reloaded = database_shows(db)
    assert load["requests"] > 20 and load["failures"] == 0, load
    restart = run_playbook("converge.yml", extra_vars={"postgresql_max_connections": 150, "postgresql_shared_buffers": "48MB"},
                           limit="topology-db1", tags="postgresql")
    assert restart.returncode == 0, output(restart)
    restarted = database_shows(db)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and through_balancer(host, "/")[0] != "200":
        time.sleep(1)
    assert through_balancer(host, "/")[0] == "200"
    back = run_playbook("converge.yml", limit="topology-db1", tags="postgresql")
    assert back.returncode == 0, output(back)
    assert reloaded == before | {"work_mem": "8MB", "log_min_duration_statement": "250ms"}, (before, reloaded)
    # work_mem follows from the memory and max_connections unless postgresql_settings sets it.
    assert {key: restarted[key] for key in ("max_connections", "shared_buffers", "log_min_duration_statement")} == {
        "max_connections": "150", "shared_buffers": "48MB",
        "log_min_duration_statement": before["log_min_duration_statement"]}, (before, restarted)
    assert restarted["started"] != before["started"]
    assert database_shows(db) | {"started": before["started"]} == before
    assert through_balancer(host, "/")[0] == "200"


def test_a_worker_that_crashes_on_start_sends_web2_back_and_the_fixed_release_goes_live(host):
    """On web2 (its worker under supervisor): a release whose worker exits as it starts fails the
    deploy, naming the process and its last words, while lb1's request loop sees no failure;
    web2's current goes back and its worker runs the live release again. The fixed release,
    deployed next, goes live on web2 and web2 serves through lb1 again."""
    web2 = hosts()["topology-web2"]
    live = web2.check_output("readlink -f /srv/mysite/current")
    releases = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "releases"
    fixed, crash = releases / "v9", releases / "v9-crash"
    for target in (fixed, crash):
        shutil.copytree(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "examples" / "mysite", target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "db.sqlite3"), dirs_exist_ok=True)
        (target / "mysite" / "version.py").write_text('VERSION = "9"\n')
    celery = crash / "mysite" / "celery.py"
    celery.write_text(celery.read_text() + "\nimport sys\n\nif 'worker' in sys.argv:\n"
                      "    raise SystemExit('worker refuses to start on purpose')\n")
    # Long enough for Celery to reach the project's code on a loaded runner.
    result, load = under_load(host, lambda: run_playbook(DEPLOY, limit="topology-web2", extra_vars={
        "mysite_source_path": str(crash), "django_app_workers_check_seconds": 30}))
    text = output(result)
    assert result.returncode != 0, text
    assert f"{PROGRAM}:{PROGRAM}_1 did not stay up for 30 s" in text and "worker refuses to start on purpose" in text, text
    assert load["requests"] > 10 and load["failures"] == 0, load
    assert web2.check_output("readlink -f /srv/mysite/current") == live
    assert wait_for(lambda: supervised_worker(web2), timeout=30)
    assert web2.check_output(f"readlink /proc/{supervised_worker(web2)}/cwd") == live
    result = run_playbook(DEPLOY, limit="topology-web2", extra_vars={"mysite_source_path": str(fixed)})
    assert result.returncode == 0, output(result)
    bodies = {through_balancer(host, "/health/")[1].strip() for _ in range(20)}
    assert "ok 9 web2" in bodies and {body.split()[-1] for body in bodies} == {"web1", "web2"}, bodies
    now_live = web2.check_output("readlink -f /srv/mysite/current")
    assert now_live != live and web2.check_output(f"readlink /proc/{supervised_worker(web2)}/cwd") == now_live
