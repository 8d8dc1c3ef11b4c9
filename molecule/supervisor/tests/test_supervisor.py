"""What a user of the supervisor role sees on a converged host."""

from __future__ import annotations

import re
import time

import pytest
from wsgistack_testlib import (
    assert_recap,
    assert_refused_before_change,
    journal,
    molecule_host_names,
    molecule_hosts,
    output,
    refusal_battery,
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


# What each program's process runs, to tell its pid from a reused or unrelated one.
COMMANDS = {"alpha": "GREETING=", "bravo": "/bin/sleep 86401",
            "pool:worker_00": "/bin/sleep 86402", "pool:worker_01": "/bin/sleep 86402"}


def command_line(host, pid: int) -> str:
    """The process's arguments, or "" when no process has this pid."""
    return host.run(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout.strip()


def assert_running(host, name: str) -> int:
    """The program is RUNNING in supervisorctl and its pid is a live process running its command;
    returns the pid."""
    pid = wait_for(lambda: running_pid(host, name), timeout=15)
    assert pid, f"{name} not RUNNING: {status(host)}\n{journal(host, 'supervisor')}"
    assert COMMANDS[name] in command_line(host, pid), (name, pid, command_line(host, pid))
    return pid


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
    assert inet_status(host, None) == "401"
    assert inet_status(host, "admin:wrong") == "401"
    assert inet_status(host, "admin:molecule-only-secret") == "200"
    assert "molecule-only-secret" not in host.file("/etc/supervisor/supervisord.conf").content_string


def test_sigkill_program_comes_back_with_new_pid(host):
    old = assert_running(host, "bravo")
    host.check_output(f"kill -KILL {old}")
    assert wait_for(lambda: command_line(host, old) == "", timeout=5), f"pid {old} still alive"
    # startsecs is 2: RUNNING again within startsecs plus a few seconds.
    new = wait_for(lambda: (pid := running_pid(host, "bravo")) and pid != old and pid, timeout=2 + 8)
    assert new and new != old, status(host)
    assert status(host)["bravo"] == ("RUNNING", new)
    assert COMMANDS["bravo"] in command_line(host, new)


def test_changing_one_program_restarts_only_it(host):
    before = {name: assert_running(host, name) for name in PROGRAMS}
    assert len(set(before.values())) == len(PROGRAMS), before
    daemon = host.check_output("supervisorctl pid")
    assert "supervisord" in command_line(host, int(daemon)), daemon
    inputs = scenario_group_vars()
    for program in inputs["supervisor_programs"]:
        if program["name"] == "alpha":
            program["environment"]["GREETING"] = "changed"
    hostname = host.backend.get_hostname()
    result = run_playbook("converge.yml", extra_vars=inputs, limit=hostname)
    assert result.returncode == 0, output(result)
    after = {name: assert_running(host, name) for name in PROGRAMS}
    assert after["alpha"] != before["alpha"]
    assert command_line(host, before["alpha"]) == "", "the old alpha process is still alive"
    for name in PROGRAMS[1:]:
        assert after[name] == before[name], f"{name} was restarted"
    assert host.check_output("supervisorctl pid") == daemon, "supervisord itself was restarted"
    assert wait_for(lambda: "GREETING=changed" in host.file("/var/log/supervisor/alpha.log").content_string, 10)
    # Back to the scenario's inputs: again only alpha restarts.
    result = run_playbook("converge.yml", limit=hostname)
    assert result.returncode == 0, output(result)
    restored = {name: assert_running(host, name) for name in PROGRAMS}
    assert restored["alpha"] != after["alpha"]
    assert {name: restored[name] for name in PROGRAMS[1:]} == {name: before[name] for name in PROGRAMS[1:]}



DAY_TWO = {"supervisor_loglevel": "debug", "supervisor_logfile_maxbytes": "10MB", "supervisor_logfile_backups": 3,
           "supervisor_unix_socket_mode": "0770", "supervisor_unix_socket_group": "adm",
           "supervisor_extra_config": "minfds=4096", "supervisor_inet_http_server_port": 9011,
           "supervisor_inet_http_server_username": "ops", "supervisor_inet_http_server_password": "molecule-day-two-secret"}


def daemon_settings(host) -> dict:
    """What supervisord runs with: its configuration's values, its control socket, its pid."""
    conf = host.file("/etc/supervisor/supervisord.conf").content_string
    sock = host.file("/run/supervisor.sock")
    return {"conf": {key: value for key, value in (line.split("=", 1) for line in conf.splitlines() if "=" in line)
                     if key in ("loglevel", "logfile_maxbytes", "logfile_backups", "chmod", "chown", "minfds", "port",
                                "username")},
            "socket": (oct(sock.mode), sock.group), "pid": host.check_output("supervisorctl pid"),
            "inet": {user: inet_status(host, user, 9011)
                     for user in ("ops:molecule-day-two-secret", "admin:molecule-only-secret")}}


INET_PROBE = (
    "import base64, sys, urllib.request, urllib.error\n"
    "req = urllib.request.Request(f'http://127.0.0.1:{sys.argv[1]}/')\n"
    "if len(sys.argv) > 2:\n"
    "    req.add_header('Authorization', 'Basic ' + base64.b64encode(sys.argv[2].encode()).decode())\n"
    "try:\n"
    "    print(urllib.request.urlopen(req, timeout=5).status)\n"
    "except urllib.error.HTTPError as exc:\n"
    "    print(exc.code)\n"
    "except OSError:\n"
    "    print('000')\n"
)


def inet_status(host, user: str | None, port: int = 9001) -> str:
    """The HTTP status supervisord's inet server answers (000: nothing listens)."""
    host.check_output(f"cat > /tmp/probe.py <<'EOF'\n{INET_PROBE}EOF")
    return host.check_output(f"python3 /tmp/probe.py {port} {user or ''}").strip()


def test_daemon_settings_change_and_go_back(host):
    """Log level and rotation, the control socket's mode and group, the inet server's port and
    credentials, and extra configuration change after the first converge: supervisord restarts with them, the socket answers with
    the new mode and group, every program runs again; the restore brings the old ones back."""
    hostname = host.backend.get_hostname()
    before = daemon_settings(host)
    try:
        result = run_playbook("converge.yml", extra_vars=scenario_group_vars() | DAY_TWO, limit=hostname)
        assert result.returncode == 0, output(result)
        after = daemon_settings(host)
        running = {name: assert_running(host, name) for name in PROGRAMS}
    finally:
        restored = run_playbook("converge.yml", limit=hostname)
    assert restored.returncode == 0, output(restored)
    back = daemon_settings(host)
    assert after["conf"] == {"chmod": "0770", "chown": "root:adm", "logfile_maxbytes": "10MB", "logfile_backups": "3",
                             "loglevel": "debug", "minfds": "4096", "port": "127.0.0.1:9011", "username": "ops"}, after
    # The inet server answers on its new port to the new credentials only.
    assert after["inet"] == {"ops:molecule-day-two-secret": "200", "admin:molecule-only-secret": "401"}, after
    assert back["inet"] == {"ops:molecule-day-two-secret": "000", "admin:molecule-only-secret": "000"}, back
    assert after["socket"] == ("0o770", "adm") and after["pid"] != before["pid"], (before, after)
    assert len(set(running.values())) == len(PROGRAMS), running
    assert (back["conf"], back["socket"]) == (before["conf"], before["socket"]), (before, back)
    assert {name: assert_running(host, name) for name in PROGRAMS}.keys() == running.keys()


def test_stopped_and_given_up_programs_are_started_by_the_next_converge(host):
    """A program stopped by hand and one supervisord gave up on (FATAL after its start
    retries) are RUNNING again after a converge whose inputs did not change: only they start."""
    before = {name: assert_running(host, name) for name in PROGRAMS}
    host.check_output("supervisorctl stop bravo pool:worker_01")
    # alpha's interpreter exits at once for a moment: every start retry fails, then FATAL.
    # supervisorctl itself runs on the real interpreter.
    script = (
        "real=$(readlink -f /usr/bin/python3); ln -sfn /bin/false /usr/bin/python3;"
        " $real /usr/bin/supervisorctl stop alpha; $real /usr/bin/supervisorctl start alpha;"
        " for i in $(seq 60); do $real /usr/bin/supervisorctl status alpha | grep -q FATAL && break; sleep 0.5; done;"
        " ln -sfn $real /usr/bin/python3"
    )
    target = host.check_output("readlink /usr/bin/python3")
    try:
        host.run(script)
    finally:
        host.check_output(f"ln -sfn {target} /usr/bin/python3")
    states = status(host)
    result = run_playbook("converge.yml", limit=host.backend.get_hostname())
    assert (states["alpha"][0], states["bravo"][0], states["pool:worker_01"][0]) == ("FATAL", "STOPPED", "STOPPED"), states
    assert result.returncode == 0, output(result)
    # Starting the three is the run's only change.
    assert_recap(result, hosts=[host.backend.get_hostname()], changed=1, failed=0)
    after = {name: assert_running(host, name) for name in PROGRAMS}
    for name in ("alpha", "bravo", "pool:worker_01"):
        assert after[name] != before[name], name
    assert after["pool:worker_00"] == before["pool:worker_00"]
    again = run_playbook("converge.yml", limit=host.backend.get_hostname())
    assert again.returncode == 0, output(again)
    assert_recap(again, hosts=[host.backend.get_hostname()], changed=0, failed=0)


def test_killed_supervisord_is_back_within_10_seconds_without_duplicates(host):
    """systemd restarts a killed supervisord within seconds (the role's drop-in: Debian's unit
    waits 50 s) and stops the old programs with it, so each program runs once."""
    assert host.check_output("systemctl show -p RestartUSec --value supervisor") == "2s"
    before = {name: assert_running(host, name) for name in PROGRAMS}
    daemon = int(host.check_output("supervisorctl pid"))
    host.check_output(f"kill -KILL {daemon}")
    started = time.monotonic()
    back = wait_for(lambda: all(running_pid(host, name) for name in PROGRAMS), timeout=10, interval=0.2)
    elapsed = time.monotonic() - started
    assert back and elapsed <= 10, (elapsed, status(host), journal(host, "supervisor"))
    after = {name: assert_running(host, name) for name in PROGRAMS}
    for name in PROGRAMS:
        assert command_line(host, before[name]) == "", f"{name}'s old process {before[name]} still runs"
        assert after[name] != before[name]
    assert int(host.check_output("supervisorctl pid")) != daemon
    # One process per program: no copy left by the killed supervisord.
    assert int(host.check_output("pgrep -c -f '^/bin/sleep 86401'")) == 1


def _with_unparsable_program(case: str) -> dict:
    """The scenario's inputs with one program file supervisor's parser rejects (exitcodes must
    be integers): bravo changed, or a new program."""
    inputs = scenario_group_vars()
    bad = {"extra_config": "exitcodes=notanumber"}
    if case == "changed program":
        next(p for p in inputs["supervisor_programs"] if p["name"] == "bravo").update(bad)
    else:
        inputs["supervisor_programs"].append(dict(bad, name="delta", command="/bin/sleep 86404"))
    return inputs


@pytest.mark.parametrize("case", ["changed program", "new program"])
def test_program_file_supervisor_cannot_parse_is_refused(case):
    """The file is checked with supervisor's own parser before it replaces the previous one:
    the run fails with supervisor's message, the program files and the running programs stay."""
    hosts = molecule_hosts()
    program = "bravo" if case == "changed program" else "delta"
    # The refusal comes from supervisor's parser, not from the role's own input checks.
    assert_refused_before_change(hosts, _with_unparsable_program(case),
                                 f"not a valid list of exit codes: 'notanumber' in section 'program:{program}'",
                                 program, [CONF_DIR, "/etc/supervisor/supervisord.conf"], state=settled_status)
    for host in hosts:
        assert not host.file(f"{CONF_DIR}/delta.conf").exists
        assert "exitcodes" not in host.file(f"{CONF_DIR}/bravo.conf").content_string
        assert host.run("pgrep -f 'sleep 8640[4]'").rc == 1
        for name in PROGRAMS:
            assert_running(host, name)


BAD_INPUTS = {
    "missing command": (
        {"supervisor_groups": [], "supervisor_programs": [{"name": "nocmd"}]},
        "command is required when state is present",
    ),
    "unknown autorestart value": (
        {"supervisor_groups": [], "supervisor_programs": [{"name": "x", "command": "/bin/true", "autorestart": "sometimes"}]},
        "value of autorestart must be one of: True, False, unexpected, got: sometimes",
    ),
    "wrong type": (
        {"supervisor_groups": [], "supervisor_programs": [{"name": "x", "command": "/bin/true", "numprocs": "many"}]},
        "argument 'numprocs' is of type str found in 'supervisor_programs'. and we were unable to convert to int",
    ),
    "duplicate names": (
        {
            "supervisor_groups": [],
            "supervisor_programs": [{"name": "dup", "command": "/bin/true"}, {"name": "dup", "command": "/bin/false"}],
        },
        "(a group and a program may not share a name either). Offending names: dup.",
    ),
    "inet server without password": (
        {"supervisor_inet_http_server_password": ""},
        "supervisor_inet_http_server_password must both be set, the password to a real secret",
    ),
    "environment value with both quotes": (
        {
            "supervisor_groups": [],
            "supervisor_programs": [{"name": "x", "command": "/bin/true", "environment": {"Q": "it's \"both\""}}],
        },
        "environment values cannot hold a newline, nor both single and double quotes.",
    ),
    "world-writable control socket": (
        {"supervisor_unix_socket_mode": "0777"},
        'does not let other users write to the socket (anyone who can write to it controls every program); got "0777"',
    ),
    "group with unknown program": (
        {"supervisor_groups": [{"name": "ghosts", "programs": ["casper"]}]},
        "lists programs that are not in supervisor_programs with state present: casper.",
    ),
}


VARIABLE_NAMED = {case: next(iter(bad)) if len(bad) == 1 else "supervisor_programs" for case, (bad, _) in BAD_INPUTS.items()}


def settled_status(host):
    for name in PROGRAMS:
        assert wait_for(lambda n=name: running_pid(host, n), timeout=15), status(host)
    return status(host)


@pytest.fixture(scope="module")
def refusals():
    """Every case of BAD_INPUTS in one run, an inventory alias each."""
    cases = {case: (bad, message, VARIABLE_NAMED[case]) for case, (bad, message) in BAD_INPUTS.items()}
    return refusal_battery(molecule_hosts(), cases, ["/etc/supervisor"], state=settled_status)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case, refusals):
    """One run for all cases: each alias fails, naming the variable, and nothing changes."""
    assert case not in refusals["problems"], refusals["problems"][case]
    assert refusals["changed"] == [], refusals["output"][-3000:]
