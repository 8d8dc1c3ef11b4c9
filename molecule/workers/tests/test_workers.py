"""Workers, timers and Redis through site.yml: a task submitted over HTTPS runs on the Celery
worker through Redis; deploys and rollbacks move the workers with the release; timers run on
schedule with the live release, never twice at once, and a failing run shows as failed."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from wsgistack_testlib import (
    assert_recap,
    journal,
    molecule_host_names,
    molecule_hosts,
    output,
    run_playbook,
    scenario_group_vars,
    site_get,
    tree_checksums,
    unit_pids,
    wait_for,
)

testinfra_hosts = molecule_host_names()

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
DEPLOY = str(PROJECT / "playbooks" / "deploy.yml")
ROLLBACK = str(PROJECT / "playbooks" / "rollback.yml")
NAME = "mysite.test"
WORKER = "django-mysite-worker-celery@1.service"
PROGRAM = "django-mysite-worker-celery"
TICKS = "/srv/mysite/shared/data/ticks.log"
UNITS = ["/etc/systemd/system/django-mysite-worker-celery@.service",
         "/etc/systemd/system/django-mysite-timer-tick.service", "/etc/systemd/system/django-mysite-timer-tick.timer"]


def task(host, text: str) -> tuple[str, str]:
    return site_get(host, NAME, f"/task?text={text}", extra="--max-time 30")


def worker_pids(host) -> set[int]:
    """Every process of the worker's unit: Celery's main process and its pool (its children)."""
    return unit_pids(host, WORKER)


def program_main(host) -> int | None:
    """The pid of the worker's process under supervisor, when it runs."""
    main = re.search(r"\sRUNNING\s+pid (\d+),", host.run(f"supervisorctl status {PROGRAM}:*").stdout)
    return int(main.group(1)) if main else None


def program_pids(host) -> set[int]:
    """Every process of the worker under supervisor: Celery's main process and its pool."""
    main = program_main(host)
    if main is None:
        return set()
    children = host.run(f"ps -o pid= --ppid {main}").stdout.split()
    return {main, *(int(pid) for pid in children)}


def answered_by_worker(host, text: str, release: str, pids=worker_pids) -> int:
    """Submit a task through the site; its answer names the release and the worker's pid."""
    status, body = task(host, text)
    assert status == "200", f"{status} {body}\n{journal(host, WORKER)}"
    match = re.fullmatch(rf"task: {text} from release {release} \(pid (\d+) on ([\w.-]+)\)", body.strip())
    assert match and match.group(2) == host.check_output("hostname"), body
    pid = int(match.group(1))
    assert pid in pids(host), (pid, pids(host))
    return pid


def one_host():
    """The host of the tests that change one host's inputs (the scenario's last)."""
    return molecule_hosts()[-1]


def release_copy(version: str) -> str:
    """The example project with another VERSION, as another release."""
    target = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "releases" / f"v{version}"
    if not target.exists():
        shutil.copytree(PROJECT / "examples" / "mysite", target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "db.sqlite3"))
        (target / "mysite" / "version.py").write_text(f'VERSION = "{version}"\n')
    return str(target)


def test_task_through_the_site_runs_on_the_worker_through_redis(host):
    answered_by_worker(host, "hello", "1")
    # The worker runs as the app user, with the release's virtualenv.
    main = host.check_output(f"systemctl show -P MainPID {WORKER}")
    assert host.check_output(f"ps -o user= -p {main}") == "mysite"
    # In the live release's directory, with its virtualenv's celery.
    live = host.check_output("readlink -f /srv/mysite/current")
    assert host.check_output(f"readlink /proc/{main}/cwd") == live
    assert f"{live}/.venv/bin/celery" in host.check_output(f"tr '\\0' ' ' < /proc/{main}/cmdline")


def test_deploy_moves_the_workers_to_the_new_release_and_rollback_back():
    """After a deploy of a release whose task answers otherwise, a new task gets the new answer
    and no worker process started before the switch is left; rollback.yml brings the old
    answer back the same way."""
    hosts = molecule_hosts()
    before = {h.backend.host: worker_pids(h) for h in hosts}
    result = run_playbook(DEPLOY, extra_vars={"mysite_source_path": release_copy("2")})
    assert result.returncode == 0, output(result)
    for h in hosts:
        answered_by_worker(h, "after-deploy", "2")
        assert not worker_pids(h) & before[h.backend.host], (worker_pids(h), before[h.backend.host])
    during = {h.backend.host: worker_pids(h) for h in hosts}
    result = run_playbook(ROLLBACK)
    assert result.returncode == 0, output(result)
    for h in hosts:
        answered_by_worker(h, "after-rollback", "1")
        assert not worker_pids(h) & during[h.backend.host]


def test_a_release_that_fails_its_check_leaves_the_workers_on_the_live_release():
    """A release that goes live and fails its check: the release goes back and so do the
    workers."""
    h = one_host()
    before = worker_pids(h)
    bad = Path(release_copy("3"))
    (bad / "notes" / "views.py").write_text((bad / "notes" / "views.py").read_text().replace(
        "def health(", "def health(request):\n    raise RuntimeError('unhealthy on purpose')\n\n\ndef _health_unused("))
    result = run_playbook(DEPLOY, extra_vars={"mysite_source_path": str(bad), "django_app_check_before_switch": False},
                          limit=h.backend.host)
    assert result.returncode != 0 and "failed its check after the switch" in output(result), output(result)
    pid = answered_by_worker(h, "after-bad-release", "1")
    # The workers were stopped for the switch and started again on the live release.
    assert pid not in before, (pid, before)


def test_a_worker_that_crashes_on_start_sends_the_release_back():
    """A release whose worker exits as it starts (the site itself is fine): the deploy fails,
    naming the worker and its last words, current goes back and the workers run the live release."""
    hosts = molecule_hosts()
    crash = Path(release_copy("4"))
    celery = crash / "mysite" / "celery.py"
    celery.write_text(celery.read_text() + "\nimport sys\n\nif 'worker' in sys.argv:\n"
                      "    raise SystemExit('worker refuses to start on purpose')\n")
    live = {h.backend.host: h.check_output("readlink /srv/mysite/current") for h in hosts}
    # Long enough for Celery to reach the project's code on a loaded runner.
    result = run_playbook(DEPLOY, extra_vars={"mysite_source_path": str(crash), "django_app_workers_check_seconds": 30})
    text = output(result)
    assert result.returncode != 0, text
    assert f"{WORKER} did not stay up for 30 s" in text and "worker refuses to start on purpose" in text, text
    for h in hosts:
        assert h.check_output("readlink /srv/mysite/current") == live[h.backend.host]
        answered_by_worker(h, "after-crash", "1")


def test_a_killed_worker_is_started_again(host):
    main = int(host.check_output(f"systemctl show -P MainPID {WORKER}"))
    host.run(f"kill -9 {main}")
    wait_for(lambda: host.check_output(f"systemctl show -P MainPID {WORKER}") not in ("0", str(main))
             and host.run(f"systemctl is-active {WORKER}").stdout.strip() == "active", timeout=30)
    wait_for(lambda: task(host, "after-kill")[0] == "200", timeout=60, interval=2)
    answered_by_worker(host, "after-kill", "1")


def test_timer_runs_with_the_live_release_and_never_twice_at_once(host):
    host.run(f"truncate -s 0 {TICKS}")
    # Every 10 s, each run 12 s: a run every 20 s, each due while the one before is going.
    ends = wait_for(lambda: host.run(f"grep -c ' end$' {TICKS}").stdout.strip() not in ("", "0", "1"), timeout=90, interval=2)
    lines = [line for line in host.file(TICKS).content_string.splitlines() if line.endswith((" start", " end"))]
    assert ends, lines
    assert all("release=1 settings=mysite.settings.production" in line for line in lines), lines
    marks = [line.rsplit(" ", 1)[1] for line in lines]
    # Starts and ends alternate: no run began while another was going.
    if marks and marks[0] == "end":
        marks = marks[1:]
    assert all(mark == ("start" if i % 2 == 0 else "end") for i, mark in enumerate(marks)), lines
    assert host.service("django-mysite-timer-tick.timer").is_enabled
    log = host.check_output("journalctl -t mysite-tick --no-pager -n 20")
    assert "release=1" in log, log


def test_a_failing_timer_run_shows_as_failed(host):
    assert wait_for(lambda: "django-mysite-timer-tickfail.service" in host.check_output("systemctl --failed --plain --no-legend"),
                    timeout=70, interval=2), host.check_output("systemctl --failed --plain --no-legend")
    assert "tick failed on purpose" in host.check_output("journalctl -t mysite-tickfail --no-pager -n 20")


def test_redis_requires_its_password_listens_on_localhost_and_keeps_data_across_a_restart(host):
    password = scenario_group_vars()["redis_password"]
    assert "NOAUTH" in host.run("redis-cli ping").stdout
    listening = host.check_output("ss -Hltn 'sport = :6379'")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}, listening
    env = f"REDISCLI_AUTH={password}"
    assert host.check_output(f"{env} redis-cli set wsgistack-kept yes") == "OK"
    host.run_expect([0], "systemctl restart redis-server")
    wait_for(lambda: host.run(f"{env} redis-cli ping").stdout.strip() == "PONG", timeout=30)
    assert host.check_output(f"{env} redis-cli get wsgistack-kept") == "yes"
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis" and conf.mode == 0o640


def redis_config(host, name: str) -> str:
    password = scenario_group_vars()["redis_password"]
    return host.check_output(f"REDISCLI_AUTH={password} redis-cli config get {name}").splitlines()[-1]


# Workers and timers are the django_app role's, Redis its own: day two runs only their tags, as
# users tuning them do.
DAY_TWO_TAGS = "django_app,redis"


def test_day_two_workers_timers_and_redis_change_and_go_back():
    """django_app_workers' processes, a second worker, django_app_timers' on_calendar and Redis'
    redis_maxmemory, redis_maxmemory_policy and redis_persistence changed; then the processes
    back to one, the second worker and a timer marked absent and Redis back: each shows on the
    host, Redis keeps its data and the worker keeps answering."""
    h = one_host()
    base = scenario_group_vars()
    password = base["redis_password"]
    redis = f"REDISCLI_AUTH={password} redis-cli"
    assert h.check_output(f"{redis} set wsgistack-day-two kept") == "OK"
    extra = {"name": "extra", "command": "celery -A mysite worker --concurrency 1 -n extra%i@%%h"}
    workers = [dict(base["django_app_workers"][0], processes=2), extra]
    timers = [dict(base["django_app_timers"][0], on_calendar="*:*:0/30"), base["django_app_timers"][1]]
    result = run_playbook("converge.yml", limit=h.backend.host, tags=DAY_TWO_TAGS, extra_vars={
        "django_app_workers": workers, "django_app_timers": timers,
        "redis_maxmemory": "32mb", "redis_maxmemory_policy": "allkeys-lru", "redis_persistence": "aof"})
    assert result.returncode == 0, output(result)
    for unit in ("django-mysite-worker-celery@2.service", "django-mysite-worker-extra@1.service"):
        assert h.run(f"systemctl is-active {unit}").stdout.strip() == "active", journal(h, unit)
    assert h.check_output("systemctl show -P User django-mysite-worker-extra@1.service") == "mysite"
    assert "*:*:0/30" in h.file("/etc/systemd/system/django-mysite-timer-tick.timer").content_string
    assert (redis_config(h, "maxmemory"), redis_config(h, "maxmemory-policy"), redis_config(h, "appendonly")) \
        == (str(32 * 1024 * 1024), "allkeys-lru", "yes")
    assert h.check_output(f"{redis} get wsgistack-day-two") == "kept"
    wait_for(lambda: task(h, "two")[0] == "200", timeout=60, interval=2)
    # Back to one process, the second worker and the tick timer marked absent, Redis as the
    # inventory has it: the second process, the worker's and the timer's units go.
    fewer = {"django_app_workers": [base["django_app_workers"][0], dict(extra, state="absent")],
             "django_app_timers": [dict(timers[0], state="absent"), base["django_app_timers"][1]]}
    result = run_playbook("converge.yml", limit=h.backend.host, tags=DAY_TWO_TAGS, extra_vars=fewer)
    assert result.returncode == 0, output(result)
    assert not h.file("/etc/systemd/system/multi-user.target.wants/django-mysite-worker-celery@2.service").exists
    assert h.run("systemctl is-active django-mysite-worker-celery@2.service").stdout.strip() != "active"
    assert h.run("systemctl is-active django-mysite-worker-celery@1.service").stdout.strip() == "active"
    assert not h.file("/etc/systemd/system/django-mysite-worker-extra@.service").exists
    assert h.run("pgrep -u mysite -f -- '-n extra1@'").rc == 1
    for path in [*UNITS[1:], "/etc/systemd/system/timers.target.wants/django-mysite-timer-tick.timer"]:
        assert not h.file(path).exists, path
    assert "django-mysite-timer-tick.timer" not in h.check_output("systemctl list-timers --all --no-legend")
    # A run the removal stopped does not stay behind as a failure.
    assert "django-mysite-timer-tick.service" not in h.check_output("systemctl --failed --plain --no-legend")
    assert (redis_config(h, "maxmemory"), redis_config(h, "maxmemory-policy"), redis_config(h, "appendonly")) \
        == (str(64 * 1024 * 1024), "noeviction", "no")
    assert h.check_output(f"{redis} get wsgistack-day-two") == "kept"
    answered_by_worker(h, "back", "1")


@pytest.mark.parametrize(
    ("extra_vars", "message", "variable"),
    [
        ({"django_app_workers": [{"name": "celery"}]}, "needs a command on one line", "django_app_workers"),
        ({"django_app_timers": [{"name": "t", "command": "clearsessions", "on_calendar": "every tuesday-ish"}]},
         "systemd does not take the on_calendar", "django_app_timers"),
        ({"redis_password": "short"}, "redis_password", "redis_password"),
        ({"django_app_workers_process_manager": "runit"}, "must be one of", "django_app_workers_process_manager"),
        # systemd expands $HOSTNAME in a command; supervisor would pass it on as it is.
        ({"django_app_workers_process_manager": "supervisor",
          "django_app_workers": [{"name": "celery", "command": "celery -A mysite worker -n celery$HOSTNAME"}]},
         "may hold only the specifiers", "django_app_workers_process_manager"),
    ],
    ids=["worker without command", "calendar systemd refuses", "short redis password", "unknown process manager",
         "command supervisor reads otherwise"],
)
def test_bad_input_is_refused_before_any_change(extra_vars, message, variable):
    hosts = molecule_hosts()
    paths = [*UNITS, "/etc/redis/redis.conf", "/srv/mysite/current/_config"]
    before = {h.backend.host: ([tree_checksums(h, p) for p in paths], worker_pids(h)) for h in hosts}
    result = run_playbook("converge.yml", extra_vars=extra_vars)
    text = output(result)
    assert result.returncode != 0 and message in text and variable in text, text
    assert_recap(result, changed=0)
    for h in hosts:
        assert ([tree_checksums(h, p) for p in paths], worker_pids(h)) == before[h.backend.host]


def test_workers_move_to_supervisor_deploy_crash_and_move_back():
    """django_app_workers_process_manager: supervisor moves the worker from its systemd unit to a
    supervisor program (the unit stopped and gone, one copy running), which runs as the app user
    on the live release, answers tasks and comes back when killed; a second run changes nothing.
    Deploys move it to the new release; a release whose worker crashes on start goes back. Back to
    systemd, the program is gone and the unit answers again."""
    h = one_host()
    supervisor = {"django_app_workers_process_manager": "supervisor"}
    result = run_playbook("converge.yml", limit=h.backend.host, tags=DAY_TWO_TAGS, extra_vars=supervisor)
    assert result.returncode == 0, output(result)
    assert not h.file(UNITS[0]).exists
    assert h.run(f"systemctl is-active {WORKER}").stdout.strip() != "active"
    conf = h.file(f"/etc/supervisor/conf.d/{PROGRAM}.conf")
    assert (conf.user, conf.mode) == ("root", 0o640)
    pids = program_pids(h)
    main = program_main(h)
    assert h.check_output(f"ps -o user= -p {main}") == "mysite"
    assert h.check_output(f"readlink /proc/{main}/cwd") == h.check_output("readlink -f /srv/mysite/current")
    # The command's %i and %% as supervisor expands them: the process number, and a % for Celery's %h.
    assert "-n celery1@%h" in h.check_output(f"tr '\\0' ' ' < /proc/{main}/cmdline")
    answered_by_worker(h, "supervised", "1", program_pids)
    result = run_playbook("converge.yml", limit=h.backend.host, tags=DAY_TWO_TAGS, extra_vars=supervisor)
    assert result.returncode == 0, output(result)
    assert_recap(result, changed=0)
    assert program_pids(h) == pids

    # A deploy: the old processes stop before current moves, new ones answer from the new release.
    result = run_playbook(DEPLOY, limit=h.backend.host, extra_vars=supervisor | {"mysite_source_path": release_copy("5")})
    assert result.returncode == 0, output(result)
    answered_by_worker(h, "supervised-deploy", "5", program_pids)
    assert not program_pids(h) & pids
    # A release whose worker exits as it starts goes back, naming the process and its last words.
    crash = Path(release_copy("6"))
    celery = crash / "mysite" / "celery.py"
    celery.write_text(celery.read_text() + "\nimport sys\n\nif 'worker' in sys.argv:\n"
                      "    raise SystemExit('worker refuses to start on purpose')\n")
    live = h.check_output("readlink /srv/mysite/current")
    result = run_playbook(DEPLOY, limit=h.backend.host, extra_vars=supervisor | {
        "mysite_source_path": str(crash), "django_app_workers_check_seconds": 30})
    text = output(result)
    assert result.returncode != 0, text
    assert f"{PROGRAM}:{PROGRAM}_1 did not stay up for 30 s" in text and "worker refuses to start on purpose" in text, text
    assert h.check_output("readlink /srv/mysite/current") == live
    answered_by_worker(h, "supervised-after-crash", "5", program_pids)
    # Killed, supervisord starts it again.
    main = program_main(h)
    h.run(f"kill -9 {main}")
    wait_for(lambda: program_main(h) not in (None, main), timeout=30)
    wait_for(lambda: task(h, "supervised-after-kill")[0] == "200", timeout=60, interval=2)
    answered_by_worker(h, "supervised-after-kill", "5", program_pids)

    # Back to systemd, on the inventory's release.
    result = run_playbook("converge.yml", limit=h.backend.host, tags=DAY_TWO_TAGS)
    assert result.returncode == 0, output(result)
    assert not h.file(f"/etc/supervisor/conf.d/{PROGRAM}.conf").exists
    assert PROGRAM not in h.run("supervisorctl status").stdout
    answered_by_worker(h, "systemd-again", "1")
    assert len(worker_pids(h)) > 1 and not worker_pids(h) & program_pids(h)
