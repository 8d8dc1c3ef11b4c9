"""What a user of the supervisor role sees on a converged host."""

from __future__ import annotations

import re

import pytest
from wsgistack_testlib import (
    assert_refused_before_change,
    journal,
    molecule_host_names,
    molecule_hosts,
    output,
    run_playbook,
    scenario_group_vars,
    wait_for,
)

testinfra_hosts = molecule_host_names()

CONF_DIR = "/etc/supervisor/conf.d"
PROGRAMS = ["alpha", "bravo", "pool:worker_00", "pool:worker_01"]


def status(host) -> dict[str, tuple[str, int | None]]:
    """supervisorctl status as {name: (state, pid)}."""
    result = host.run("supervisorctl status")
    states = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            match = re.search(r"pid (\d+)", line)
            states[fields[0]] = (fields[1], int(match.group(1)) if match else None)
    return states


def running_pid(host, name: str) -> int | None:
    state, pid = status(host).get(name, (None, None))
    return pid if state == "RUNNING" else None


def test_supervisord_enabled_and_running(host):
    service = host.service("supervisor")
    assert service.is_enabled
    assert service.is_running, journal(host, "supervisor")


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_running(host, name):
    assert wait_for(lambda: running_pid(host, name), timeout=15), (
        f"{name} not RUNNING: {status(host)}\n{journal(host, 'supervisor')}"
    )


def test_program_runs_as_its_user_with_literal_environment(host):
    pid = running_pid(host, "alpha")
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "nobody"
    log = host.file("/var/log/supervisor/alpha.log").content_string
    assert 'GREETING=say "hi", 100% sure' in log


def test_managed_files_have_header_and_modes(host):
    main = host.file("/etc/supervisor/supervisord.conf")
    assert main.user == "root" and main.group == "supervisor-ops" and main.mode == 0o640
    assert "Ansible managed" in main.content_string
    for name in ("alpha.conf", "bravo.conf", "worker.conf", "pool.group.conf"):
        conf = host.file(f"{CONF_DIR}/{name}")
        assert conf.exists, name
        assert conf.user == "root" and conf.mode == 0o640
        assert "Ansible managed" in conf.content_string


def test_control_socket_owner_and_mode(host):
    sock = host.file("/run/supervisor.sock")
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == ("root", "supervisor-ops", 0o770)


def test_operator_in_group_may_use_supervisorctl(host):
    allowed = host.run("sudo -u operator1 supervisorctl status bravo")
    assert "RUNNING" in allowed.stdout, allowed.stdout + allowed.stderr
    denied = host.run("sudo -u nobody supervisorctl status bravo")
    assert "RUNNING" not in denied.stdout
    assert "Permission denied" in denied.stdout + denied.stderr or denied.rc != 0


def test_retired_program_stopped_and_removed(host):
    assert not host.file(f"{CONF_DIR}/retired.conf").exists
    assert "retired" not in status(host)
    # The bracket keeps pgrep from matching the shell that runs it.
    assert host.run("pgrep -f 'sleep 8640[3]'").rc == 1


def test_inet_server_requires_the_password(host):
    probe = (
        "import base64, sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request('http://127.0.0.1:9001/')\n"
        "if len(sys.argv) > 1:\n"
        "    req.add_header('Authorization', 'Basic ' + base64.b64encode(sys.argv[1].encode()).decode())\n"
        "try:\n"
        "    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"
    )
    host.check_output(f"cat > /tmp/probe.py <<'EOF'\n{probe}EOF")
    assert host.check_output("python3 /tmp/probe.py").strip() == "401"
    assert host.check_output("python3 /tmp/probe.py admin:wrong").strip() == "401"
    assert host.check_output("python3 /tmp/probe.py admin:molecule-only-secret").strip() == "200"
    assert "molecule-only-secret" not in host.file("/etc/supervisor/supervisord.conf").content_string


def test_sigkill_program_comes_back_with_new_pid(host):
    old = wait_for(lambda: running_pid(host, "bravo"), timeout=15)
    assert old
    host.run(f"kill -KILL {old}")
    # startsecs is 2: RUNNING again within startsecs plus a few seconds.
    new = wait_for(lambda: (pid := running_pid(host, "bravo")) and pid != old and pid, timeout=2 + 8)
    assert new and new != old, status(host)


def test_changing_one_program_restarts_only_it(host):
    before = {name: wait_for(lambda n=name: running_pid(host, n), timeout=15) for name in PROGRAMS}
    daemon = host.check_output("supervisorctl pid")
    inputs = scenario_group_vars()
    for program in inputs["supervisor_programs"]:
        if program["name"] == "alpha":
            program["environment"]["GREETING"] = "changed"
    hostname = host.backend.get_hostname()
    result = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
    assert result.returncode == 0, output(result)
    after = {name: wait_for(lambda n=name: running_pid(host, n), timeout=15) for name in PROGRAMS}
    assert after["alpha"] != before["alpha"]
    for name in PROGRAMS[1:]:
        assert after[name] == before[name], f"{name} was restarted"
    assert host.check_output("supervisorctl pid") == daemon, "supervisord itself was restarted"
    assert wait_for(lambda: "GREETING=changed" in host.file("/var/log/supervisor/alpha.log").content_string, 10)
    # Back to the scenario's inputs: again only alpha restarts.
    result = run_playbook("converge.yml", limit=hostname)
    assert result.returncode == 0, output(result)
    assert wait_for(lambda: running_pid(host, "bravo"), timeout=15) == before["bravo"]


BAD_INPUTS = {
    "missing command": (
        {"supervisor_groups": [], "supervisor_programs": [{"name": "nocmd"}]},
        "command is required",
    ),
    "unknown autorestart value": (
        {"supervisor_groups": [], "supervisor_programs": [{"name": "x", "command": "/bin/true", "autorestart": "sometimes"}]},
        "autorestart",
    ),
    "wrong type": (
        {"supervisor_groups": [], "supervisor_programs": [{"name": "x", "command": "/bin/true", "numprocs": "many"}]},
        "numprocs",
    ),
    "duplicate names": (
        {
            "supervisor_groups": [],
            "supervisor_programs": [{"name": "dup", "command": "/bin/true"}, {"name": "dup", "command": "/bin/false"}],
        },
        "dup",
    ),
    "inet server without password": (
        {"supervisor_inet_http_server_password": ""},
        "supervisor_inet_http_server_password",
    ),
    "environment value with both quotes": (
        {
            "supervisor_groups": [],
            "supervisor_programs": [{"name": "x", "command": "/bin/true", "environment": {"Q": "it's \"both\""}}],
        },
        "both single and double quotes",
    ),
    "world-writable control socket": (
        {"supervisor_unix_socket_mode": "0777"},
        "supervisor_unix_socket_mode",
    ),
    "group with unknown program": (
        {"supervisor_groups": [{"name": "ghosts", "programs": ["casper"]}]},
        "casper",
    ),
}


VARIABLE_NAMED = {case: next(iter(bad)) if len(bad) == 1 else "supervisor_programs" for case, (bad, _) in BAD_INPUTS.items()}


def settled_status(host):
    for name in PROGRAMS:
        assert wait_for(lambda n=name: running_pid(host, n), timeout=15), status(host)
    return status(host)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case):
    """One run against every instance: it fails on each, naming the variable, and changes nothing."""
    bad, message = BAD_INPUTS[case]
    assert_refused_before_change(molecule_hosts(), bad, message, VARIABLE_NAMED[case],
                                 ["/etc/supervisor"], state=settled_status)
