"""tools/harness.py: a bad environment gets a message that says what to do."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("harness", ROOT / "tools" / "harness.py")
harness = importlib.util.module_from_spec(spec)
sys.modules["harness"] = harness
spec.loader.exec_module(harness)


def test_finds_the_newest_python_with_venv():
    version, executable = harness.find_python()
    assert version >= (3, 11)
    assert harness._probe_python(executable)[0] == version


def test_no_python_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(harness, "_candidate_pythons", lambda: ["/nonexistent/python3"])
    with pytest.raises(harness.HarnessError, match=r"No Python >= 3.11.*apt-get install python3 python3-venv"):
        harness.find_python()


def test_old_python_is_not_chosen(monkeypatch):
    monkeypatch.setattr(harness, "_candidate_pythons", lambda: ["python-old"])
    monkeypatch.setattr(harness, "_probe_python", lambda path: ((3, 9), "/usr/bin/python3.9"))
    with pytest.raises(harness.HarnessError, match="No Python >= 3.11"):
        harness.find_python()


def test_no_engine_and_not_root_says_what_to_do(monkeypatch):
    monkeypatch.setattr(harness, "_docker_answers", lambda: False)
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    with pytest.raises(harness.HarnessError, match=r"not root.*systemctl start docker.*docker` group"):
        harness.ensure_engine()


def test_running_engine_is_left_alone(monkeypatch):
    monkeypatch.setattr(harness, "_docker_answers", lambda: True)

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be installed or started when an engine answers")

    monkeypatch.setattr(harness, "apt_install", refuse)
    monkeypatch.setattr(harness.subprocess, "Popen", refuse)
    harness.ensure_engine()


def test_unreachable_mirror_names_the_variable():
    # A loopback port nobody listens on: refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(harness.HarnessError, match="WSGISTACK_DEBIAN_MIRROR"):
        harness._check_mirror(f"http://127.0.0.1:{port}/debian", "bookworm")


def test_scenarios_are_found():
    assert "supervisor" in harness.scenarios()


def test_jobs_run_side_by_side_each_into_its_own_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "LOG_DIR", tmp_path / "logs")
    monkeypatch.setattr(harness, "DURATIONS", tmp_path / "durations.json")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "job-0.log").write_text("stale: from an earlier run")
    # A log of a step this run does not have (another run may still be writing it) stays.
    (tmp_path / "logs" / "other.log").write_text("another run's step")
    # Each job records when it ran; they ran side by side if every one started before any ended.
    sleeper = ("import sys, time; start = time.time(); print(sys.argv[1], flush=True); time.sleep(1.0);"
               " print('span', start, time.time())")
    jobs = [harness.Job(f"job {n}", [sys.executable, "-c", sleeper, f"output of {n}"]) for n in range(3)]
    harness.run_jobs(jobs, 3)
    spans = []
    for n, job in enumerate(jobs):
        assert job.ok and job.log == tmp_path / "logs" / f"job-{n}.log"
        text = job.log.read_text()
        assert f"output of {n}" in text
        spans.append([float(x) for x in text.split("span ")[1].split()[:2]])
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
    assert "stale" not in jobs[0].log.read_text()
    assert (tmp_path / "logs" / "other.log").read_text() == "another run's step"
    assert json.loads((tmp_path / "durations.json").read_text()).keys() == {"job 0", "job 1", "job 2"}
    assert "FAILED" not in capsys.readouterr().out


def waiting_job(condition: str, then: str = "") -> str:
    """A job's script (argv: the marks directory, its name, another job's name): it marks its start
    (start-<name>), waits up to 120 s until `condition` holds, then runs `then`; it fails with
    'alone' if the condition never holds, i.e. if the jobs it waits for did not run beside it."""
    return ("import os, sys, time; marks = sys.argv[1]; me = sys.argv[2]; other = sys.argv[3]\n"
            "open(os.path.join(marks, 'start-' + me), 'w').close()\n"
            "deadline = time.time() + 120\n"
            f"while not ({condition}):\n"
            "    if time.time() > deadline: sys.exit('alone')\n"
            "    time.sleep(0.05)\n" + then)


def test_background_jobs_run_niced_one_at_a_time_beside_the_others(tmp_path, monkeypatch):
    """Lint and unit tests beside scenarios: in a lane of their own, one at a time, under
    `nice -n 19`, while the scenarios keep their workers and their priority. Each main job waits
    for the other one and for a side job to have started (so they ran side by side); the side
    jobs record when they start and end."""
    monkeypatch.setattr(harness, "LOG_DIR", tmp_path / "logs")
    monkeypatch.setattr(harness, "DURATIONS", tmp_path / "durations.json")
    marks = tmp_path / "marks"
    marks.mkdir()
    main_job = waiting_job("os.path.exists(os.path.join(marks, 'start-' + other))"
                           " and any(name.startswith('start-side') for name in os.listdir(marks))",
                           "print('nice', os.nice(0))\n")
    side_job = ("import os, sys, time; marks = sys.argv[1]; me = sys.argv[2]\n"
                "open(os.path.join(marks, 'start-' + me), 'w').write(repr(time.time()))\n"
                "time.sleep(0.3)\n"
                "open(os.path.join(marks, 'end-' + me), 'w').write(repr(time.time()))\n"
                "print('nice', os.nice(0))\n")
    main = [harness.Job(f"main {n}", [sys.executable, "-c", main_job, str(marks), f"main{n}", f"main{1 - n}"])
            for n in range(2)]
    side = [harness.Job(f"side {n}", [sys.executable, "-c", side_job, str(marks), f"side{n}"], background=True)
            for n in range(2)]
    harness.run_jobs(main + side, 2)
    for job in main + side:
        assert job.ok, job.log.read_text()
    for job in main:
        assert not job.log.read_text().startswith("$ nice"), job.log.read_text()
    for job in side:
        assert job.log.read_text().startswith("$ nice -n 19 "), job.log.read_text()

    def nice_of(job):
        return int(next(line for line in job.log.read_text().splitlines() if line.startswith("nice ")).split()[1])

    base = nice_of(main[0])
    assert nice_of(main[1]) == base and [nice_of(job) for job in side] == [min(base + 19, 19)] * 2
    spans = sorted((float((marks / f"start-side{n}").read_text()), float((marks / f"end-side{n}").read_text()))
                   for n in range(2))
    assert spans[0][1] <= spans[1][0], spans


def test_background_jobs_alone_use_every_worker_at_their_own_priority(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "LOG_DIR", tmp_path / "logs")
    monkeypatch.setattr(harness, "DURATIONS", tmp_path / "durations.json")
    marks = tmp_path / "marks"
    marks.mkdir()
    job = waiting_job("os.path.exists(os.path.join(marks, 'start-' + other))")
    jobs = [harness.Job(f"lint {n}", [sys.executable, "-c", job, str(marks), f"lint{n}", f"lint{1 - n}"], background=True)
            for n in range(2)]
    harness.run_jobs(jobs, 2)
    for one in jobs:
        assert one.ok, one.log.read_text()
        assert not one.log.read_text().startswith("$ nice"), one.log.read_text()


def test_a_failed_job_is_reported_with_its_full_log_while_the_others_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "LOG_DIR", tmp_path / "logs")
    monkeypatch.setattr(harness, "DURATIONS", tmp_path / "durations.json")
    failing = "import sys; print('first line of the failure'); print('x' * 5000); print('last words'); sys.exit(3)"
    slow = "import time; time.sleep(1); print('slow one done')"
    jobs = [harness.Job("bad", [sys.executable, "-c", failing]), harness.Job("slow", [sys.executable, "-c", slow])]
    harness.run_jobs(jobs, 2)
    assert not jobs[0].ok and jobs[1].ok
    out = capsys.readouterr().out
    assert "FAILED: bad" in out and "first line of the failure" in out and "last words" in out
    assert "slow one done" not in out
    assert harness.report(jobs, time.monotonic()) == 1


def test_molecule_phases_are_timed_from_the_output(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "LOG_DIR", tmp_path)
    script = ("import time\n"
              "for phase in ('create', 'converge', 'verify'):\n"
              "    if phase == 'verify':\n"
              "        print(f'INFO     [demo > {phase}] Executing', flush=True)\n"
              "    else:\n"
              "        print(f'INFO     \\x1b[32mdemo\\x1b[0m \u279c \\x1b[33m{phase}\\x1b[0m: Executing', flush=True)\n"
              "    time.sleep(0.5 if phase == 'converge' else 0.05)\n")
    job = harness.run_job(harness.Job("molecule demo", [sys.executable, "-c", script]))
    assert [name for name, _ in job.phases] == ["create", "converge", "verify"]
    # Phases are timed from when their lines are read, so allow for scheduling either side.
    phases = dict(job.phases)
    assert phases["converge"] >= 0.4 and phases["converge"] > phases["create"], phases


def test_jobs_default_from_the_environment_or_the_machine(monkeypatch):
    monkeypatch.setenv("WSGISTACK_JOBS", "5")
    assert harness.default_jobs() == 5
    monkeypatch.setenv("WSGISTACK_JOBS", "many")
    with pytest.raises(harness.HarnessError, match="WSGISTACK_JOBS must be a whole number"):
        harness.default_jobs()
    monkeypatch.delenv("WSGISTACK_JOBS")
    assert 1 <= harness.default_jobs() <= (os.cpu_count() or 1) + 1


def test_a_step_the_harness_cannot_run_fails_with_the_reason_in_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "LOG_DIR", tmp_path)
    job = harness.run_job(harness.Job("missing", [str(tmp_path / "no-such-program")]))
    assert not job.ok and "could not run this step" in job.log.read_text()


def test_unknown_scenario_is_refused_by_name():
    with pytest.raises(harness.HarnessError, match="No Molecule scenario named nope; there are: .*supervisor"):
        harness.molecule_jobs(["nope"])


def test_the_projects_own_venv_is_never_the_interpreter_for_a_new_one(monkeypatch):
    """Child steps of a test run have .venv/bin first on PATH; choosing its python would make the
    toolchain stamp differ and the harness delete the venv in use."""
    monkeypatch.setenv("PATH", f"{harness.VENV / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert not [p for p in harness._candidate_pythons() if Path(p).parent == harness.VENV / "bin"]


def test_the_report_ends_with_why_each_failed_step_failed(tmp_path, capsys):
    """CI output is often cut in the middle: after the summary, each failed step's failed tasks
    (task line, failure and the YAML result under it) and error lines; not the retries, the
    failures Ansible ignored, or the steps that passed."""
    log = tmp_path / "failed.log"
    log.write_text("TASK [Wait for instance(s) creation to complete] ***\n"
                   "FAILED - RETRYING: [localhost]: Wait for instance(s) creation to complete (299 retries left).\n"
                   + "TASK [Install the Redis server] ***\nok: [workers-debian13]\n" * 200
                   + "TASK [Probe something] ***\n"
                   "fatal: [workers-debian13]: FAILED! => \n    changed: false\n    msg: probe failed on purpose\n"
                   "...ignoring\n"
                   "RUNNING HANDLER [Restart celery] ***\n"
                   "\x1b[0;31mfatal: [workers-debian13]: FAILED! => \x1b[0m\n"
                   "    changed: false\n    msg: Unable to start service celery\n"
                   "[ERROR]: Task failed: Action failed: Unable to start service celery\n"
                   "PLAY RECAP ***\n"
                   "E   AssertionError: the worker never started\n")
    passed = tmp_path / "passed.log"
    passed.write_text("fatal: [x]: FAILED! =>\n    msg: expected by a test that passed\n")
    jobs = [harness.Job("molecule workers", [], ok=False, log=log), harness.Job("molecule site", [], ok=True, log=passed)]
    assert harness.report(jobs, time.monotonic()) == 1
    out = capsys.readouterr().out
    digest = out.split("steps: 1 passed, 1 failed")[1]
    assert "--- why molecule workers failed" in digest and "molecule site" not in digest
    assert "RUNNING HANDLER [Restart celery]" in digest and "msg: Unable to start service celery" in digest
    assert "[ERROR]: Task failed" in digest and "E   AssertionError: the worker never started" in digest
    assert "\x1b" not in digest
    for hidden in ("RETRYING", "Install the Redis server", "probe failed on purpose", "Probe something"):
        assert hidden not in digest, hidden
