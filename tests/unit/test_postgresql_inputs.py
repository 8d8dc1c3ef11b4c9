"""postgresql: bad inputs are refused by the role's checks, which change nothing (run on the controller)."""

from __future__ import annotations

import json

import pytest

GOOD = {
    "postgresql_users": [{"name": "mysite", "password": "a-password"}],
    "postgresql_databases": [{"name": "mysite", "owner": "mysite"}],
    "postgresql_hba_entries": [{"database": "mysite", "user": "mysite", "address": "10.0.0.5/32"}],
}

CASES = [
    ({"postgresql_hba_entries": [{"address": "10.0.0.5/32", "method": "trust"}]}, "trust, password and md5 are refused"),
    ({"postgresql_hba_entries": [{"address": "0.0.0.0"}]}, "address a CIDR such as"),
    ({"postgresql_users": [{"name": "mysite"}]}, "Users without a password: mysite"),
    ({"postgresql_users": [{"name": "postgres", "password": "x"}]}, "not postgres"),
    ({"postgresql_databases": [{"name": "mysite", "owner": "nobody"}]}, "an owner listed in postgresql_users"),
    ({"postgresql_hba_entries": [{"type": "local", "address": "10.0.0.5/32"}]}, "(none for local)"),
    ({"postgresql_hba_entries": [{"type": "host"}]}, "address a CIDR such as"),
    ({"postgresql_listen_addresses": ["db 1"]}, "or be empty for the unix socket alone"),
]


def check(ansible_run, tmp_path, overrides):
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "wsgistack.django.postgresql", "tasks_from": "preflight"}}],
    }]))
    return ansible_run("ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(GOOD | overrides))


def test_good_inputs_pass_and_derive_memory(ansible_run, tmp_path):
    result = check(ansible_run, tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=0" in result.stdout


def test_socket_only_server_passes(ansible_run, tmp_path):
    """The web host as its own database host: no network address, the app's user by password on the socket."""
    result = check(ansible_run, tmp_path, {"postgresql_listen_addresses": [],
                                           "postgresql_hba_entries": [{"type": "local", "database": "mysite", "user": "mysite"}]})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_bad_input_is_refused(ansible_run, tmp_path, case):
    overrides, message = case
    result = check(ansible_run, tmp_path, overrides)
    assert result.returncode != 0
    assert message in result.stdout.replace("\n", " "), result.stdout
    assert "changed=0" in result.stdout
