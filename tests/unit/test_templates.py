"""Templates: managed header everywhere, and the supervisor files render as supervisor reads them."""

from __future__ import annotations

import configparser
import json

import pytest
from conftest import ROOT

TEMPLATES = sorted(ROOT.glob("roles/*/templates/**/*.j2"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT / "roles")))
def test_template_starts_with_managed_header(template):
    text = template.read_text()
    if text.startswith("#!"):  # scripts keep their interpreter line first
        text = text.split("\n", 1)[1]
    assert text.startswith("{{ ansible_managed | comment"), template


def render(ansible_run, tmp_path, role, template, variables):
    """Render a role template with ansible itself (filters and ansible_managed included)."""
    playbook = tmp_path / "render.yml"
    out = tmp_path / "out"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": variables,
        "tasks": [
            {"ansible.builtin.include_vars": {"file": str(ROOT / "roles" / role / "defaults" / "main.yml")}},
            {"ansible.builtin.include_vars": {"file": str(ROOT / "roles" / role / "vars" / "main.yml")}},
            {"ansible.builtin.include_vars": {"file": str(ROOT / "roles" / role / "vars" / "Debian.yml")}},
            {"ansible.builtin.template": {"src": str(ROOT / "roles" / role / "templates" / template), "dest": str(out)}},
        ],
    }]))
    result = ansible_run("ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(variables))
    assert result.returncode == 0, result.stdout + result.stderr
    return out.read_text()


def parse(text):
    parser = configparser.RawConfigParser(inline_comment_prefixes=None)
    parser.read_string(text)
    return parser


def test_program_file_escapes_environment_and_names_processes(ansible_run, tmp_path):
    item = {
        "name": "web", "command": "/srv/venv/bin/uwsgi --ini /etc/uwsgi/web.ini", "state": "present",
        "numprocs": 2, "environment": {"B": 'say "hi"', "A": "100%"},
        "autostart": True, "autorestart": "unexpected", "startsecs": 10, "startretries": 3,
        "stopsignal": "QUIT", "stopwaitsecs": 70, "stopasgroup": True, "killasgroup": False,
        "redirect_stderr": True, "stdout_logfile_maxbytes": "50MB", "stdout_logfile_backups": 10,
        "stderr_logfile_maxbytes": "50MB", "stderr_logfile_backups": 10, "priority": 999, "extra_config": "",
    }
    text = render(ansible_run, tmp_path, "supervisor", "etc/supervisor/conf.d/program.conf.j2", {"item": item})
    section = parse(text)["program:web"]
    assert section["environment"] == 'A="100%%",B=\'say "hi"\''
    assert section["process_name"] == "%(program_name)s_%(process_num)02d"
    assert section["stdout_logfile"] == "/var/log/supervisor/web_%(process_num)02d.log"
    assert section["autorestart"] == "unexpected"
    # stopasgroup implies killasgroup: a worker must never outlive its master.
    assert section["killasgroup"] == "true"
    assert "stderr_logfile" not in section


def test_main_config_keeps_only_a_password_hash(ansible_run, tmp_path):
    variables = {
        "supervisor_inet_http_server_enabled": True,
        "supervisor_inet_http_server_username": "admin",
        "supervisor_inet_http_server_password": "s3cret-value",
    }
    text = render(ansible_run, tmp_path, "supervisor", "etc/supervisor/supervisord.conf.j2", variables)
    config = parse(text)
    assert "s3cret-value" not in text
    assert config["inet_http_server"]["password"] == "{SHA}" + __import__("hashlib").sha1(b"s3cret-value").hexdigest()
    assert config["unix_http_server"]["chmod"] == "0700"
    assert config["supervisorctl"]["serverurl"] == "unix:///run/supervisor.sock"
