"""redis: bad inputs are refused without showing the password, redis.conf renders each persistence
mode, and the configuration test lets a good file through and stops a bad one (run on the controller)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT
from test_templates import render

PASSWORD = 'pw "with" \\ quotes-0123456789'

CASES = [
    ({"redis_password": None}, "(it is not set)"),
    ({"redis_password": "too-short"}, "at least 16 characters"),
    ({"redis_password": "your-password-goes-here"}, "not a placeholder"),
    ({"redis_password": "0123456789abcdef\nsecond-line"}, "without control characters"),
    ({"redis_maxmemory": "256 MB"}, "redis_maxmemory must be a size such as 256mb"),
    ({"redis_bind_addresses": ["localhost"]}, "redis_bind_addresses must list IP addresses"),
    ({"redis_bind_addresses": []}, "redis_bind_addresses must list IP addresses"),
    ({"redis_port": 0}, "redis_port must be a port between 1 and 65535"),
    ({"redis_save_points": []}, "redis_persistence rdb needs redis_save_points"),
    ({"redis_save_points": [{"seconds": 0, "changes": 1}]}, "redis_persistence rdb needs redis_save_points"),
]


def check(ansible_run, tmp_path, overrides, *options):
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "wsgistack.django.redis", "tasks_from": "preflight"}}],
    }]))
    variables = {"redis_password": PASSWORD} | overrides
    return ansible_run("ansible-playbook", *options, "-i", "localhost,", str(playbook), "-e", json.dumps(variables))


def test_good_inputs_pass_and_the_password_never_shows(ansible_run, tmp_path):
    result = check(ansible_run, tmp_path, {"redis_persistence": "none", "redis_save_points": []}, "-vvv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=0" in result.stdout
    assert "quotes-0123456789" not in result.stdout + result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_bad_input_is_refused(ansible_run, tmp_path, case):
    overrides, message = case
    result = check(ansible_run, tmp_path, overrides)
    assert result.returncode != 0
    assert message in result.stdout.replace("\n", " "), result.stdout
    assert "changed=0" in result.stdout
    if overrides.get("redis_password"):
        assert overrides["redis_password"] not in result.stdout + result.stderr


def directives(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize(("redis_persistence", "lines"), [
    ("rdb", ["save 3600 1", "save 300 100", "save 60 10000", "appendonly no"]),
    ("aof", ['save ""', "appendonly yes", "appendfsync everysec"]),
    ("none", ['save ""', "appendonly no"]),
])
def test_persistence_modes_render_their_lines(ansible_run, tmp_path, redis_persistence, lines):
    text = render(ansible_run, tmp_path, "redis", "etc/redis/redis.conf.j2",
                  {"redis_password": PASSWORD, "redis_persistence": redis_persistence})
    persistence = [line for line in directives(text) if line.split()[0] in ("save", "appendonly", "appendfsync")]
    assert persistence == lines


def test_config_runs_under_the_package_unit_and_quotes_the_password(ansible_run, tmp_path):
    text = render(ansible_run, tmp_path, "redis", "etc/redis/redis.conf.j2", {
        "redis_password": PASSWORD, "redis_bind_addresses": ["127.0.0.1", "10.0.0.5"],
        "redis_extra_config": "timeout 300",
    })
    config = directives(text)
    # Debian's redis-server.service is Type=notify: Redis stays in the foreground and tells systemd.
    for line in ("daemonize no", "supervised systemd", "pidfile /run/redis/redis-server.pid", 'logfile ""',
                 "dir /var/lib/redis", "protected-mode yes", "maxmemory 256mb", "maxmemory-policy noeviction"):
        assert line in config, line
    assert "bind 127.0.0.1 10.0.0.5" in config
    assert 'requirepass "pw \\"with\\" \\\\ quotes-0123456789"' in config
    # The escape hatch comes last, so that it overrides.
    assert config[-1] == "timeout 300"


def validate(ansible_run, tmp_path, server, extra_config):
    """Render redis.conf with the role's configuration test, as the role's template task does."""
    playbook = tmp_path / "validate.yml"
    role = ROOT / "roles" / "redis"
    variables = {"redis_password": PASSWORD, "redis_extra_config": extra_config, "__redis_server_binary": server,
                 "__redis_data_dir": str(tmp_path)}
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [
            *({"ansible.builtin.include_vars": {"file": str(role / name)}}
              for name in ("defaults/main.yml", "vars/main.yml", "vars/Debian.yml")),
            {"ansible.builtin.template": {"src": str(role / "templates/etc/redis/redis.conf.j2"),
                                          "dest": str(tmp_path / "redis.conf"), "mode": "0640",
                                          "validate": "{{ __redis_validate }} %s"},
             "diff": False},
        ],
    }]))
    return ansible_run("ansible-playbook", "-v", "-i", "localhost,", str(playbook), "-e", json.dumps(variables))


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server (apt install redis-server)")
def test_configuration_test_passes_a_good_file_and_stops_a_bad_one(ansible_run, tmp_path):
    server = shutil.which("redis-server")
    good = validate(ansible_run, tmp_path, server, "")
    assert good.returncode == 0, good.stdout + good.stderr
    assert (tmp_path / "redis.conf").is_file()
    (tmp_path / "redis.conf").unlink()
    # A wrong number of arguments on a password line: Redis repeats the line, the test does not.
    bad = validate(ansible_run, tmp_path, server, "requirepass two words")
    assert bad.returncode != 0
    assert "FATAL CONFIG FILE ERROR" in bad.stdout
    assert "two words" not in bad.stdout + bad.stderr
    assert not (tmp_path / "redis.conf").exists()
    bad = validate(ansible_run, tmp_path, server, "no-such-directive yes")
    assert bad.returncode != 0
    assert "no-such-directive" in bad.stdout
