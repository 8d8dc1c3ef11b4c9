"""django_app: the role's input checks, run on the controller: one task that names every wrong value."""

from __future__ import annotations

import json

import pytest

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
GOOD = {
    "django_app_name": "mysite",
    "django_app_source": {"type": "git", "repo": "git@git.example.com:acme/mysite.git", "version": "main",
                          "ssh_key": KEY, "ssh_known_hosts": "@cert-authority *.example.com sk-ssh-ed25519@openssh.com AAAAG"},
    "django_app_secret_key": "k" * 40 + "0123456789abcdef",
    "django_app_allowed_hosts": ["mysite.acme.dev"],
    "django_app_settings_module": "mysite.settings",
    "django_app_requirements_file": "requirements.txt",
}

CASES = [
    ({"ssh_known_hosts": ""}, "a host key is never trusted on first use"),
    ({"ssh_key": ""}, "set django_app_source.ssh_key to the deploy key"),
    ({"repo": "ssh://git@git.example.com/acme/mysite.git", "ssh_known_hosts": "ssh-ed25519 AAAA"},
     "django_app_source.ssh_known_hosts to the server's host key"),
    ({"repo": "git.example.com:acme/mysite.git", "ssh_known_hosts": ""}, "a host key is never trusted on first use"),
    ({"repo": "git+ssh://git@git.example.com/acme/mysite.git", "ssh_key": ""}, "set django_app_source.ssh_key"),
    # A source the check refuses is shown without its key.
    ({"type": "Git"}, '"ssh_key": "***"'),
]


def check(ansible_run, tmp_path, values):
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "wsgistack.django.django_app", "tasks_from": "preflight"}}],
    }]))
    return ansible_run("ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(values))


def test_git_over_ssh_with_key_and_pinned_host_key_passes(ansible_run, tmp_path):
    result = check(ansible_run, tmp_path, GOOD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert KEY.splitlines()[1] not in result.stdout


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_ssh_source_without_its_key_or_host_key_is_refused(ansible_run, tmp_path, case):
    source, message = case
    result = check(ansible_run, tmp_path, GOOD | {"django_app_source": GOOD["django_app_source"] | source})
    assert result.returncode != 0
    assert message in result.stdout.replace("\n", " "), result.stdout
    assert KEY.splitlines()[1] not in result.stdout


def test_every_wrong_value_is_named_at_once(ansible_run, tmp_path):
    result = check(ansible_run, tmp_path, GOOD | {"django_app_keep_releases": 1, "django_app_threads": 0,
                                                  "django_app_allowed_hosts": ["www mysite.acme.dev"]})
    text = result.stdout.replace("\n", " ")
    assert result.returncode != 0
    for variable in ("django_app_keep_releases must be at least 2", "django_app_threads 1 or more",
                     "django_app_allowed_hosts entries must be host names"):
        assert variable in text, result.stdout


def test_worker_commands_and_values_supervisor_reads_otherwise_are_refused_under_supervisor(ansible_run, tmp_path):
    """Under supervisor a worker's command may hold only %i, %H and %%, no $ and no ';' or '#'
    after a space, and its environment values no quote at either end: the workers that break
    a rule are named, and the same workers pass under systemd."""
    workers = [{"name": "good", "command": "celery -A mysite worker -n w%i@%%h", "environment": {"A": "it's 100%"}},
               {"name": "spec", "command": "celery -A mysite worker -n w%n"},
               {"name": "dollar", "command": "celery -A mysite worker --logfile $HOME/w.log"},
               {"name": "comment", "command": "manage rqworker default ;rm"},
               {"name": "quoted", "command": "manage rqworker", "environment": {"QUEUE": "'high'"}}]
    values = GOOD | {"django_app_workers": workers, "django_app_workers_process_manager": "supervisor"}
    result = check(ansible_run, tmp_path, values)
    text = " ".join(result.stdout.split())
    assert result.returncode != 0, text
    assert ("With django_app_workers_process_manager supervisor, a worker's command may hold only the specifiers %i"
            in text), text
    assert 'fix ["spec", "dollar", "comment", "quoted"] (or use systemd)' in text, text
    result = check(ansible_run, tmp_path, values | {"django_app_workers_process_manager": "systemd",
                                                    "django_app_workers": workers[:1] + workers[2:]})
    assert result.returncode == 0, result.stdout
