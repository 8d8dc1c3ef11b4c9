"""The example project deployed as releases behind nginx + uWSGI, and a plain startproject project."""

from __future__ import annotations

import os
import re

import pytest
from wsgistack_testlib import (
    assert_refused_before_change,
    molecule_host_names,
    molecule_hosts,
    output,
    recap,
    run_playbook,
    scenario_group_vars,
)

testinfra_hosts = molecule_host_names()

ROOT = "/srv/mysite"
INPUTS = scenario_group_vars()
SECRETS = [
    INPUTS["django_app_secret_key"],
    INPUTS["django_app_secret_environment"]["MYSITE_API_TOKEN"],
    INPUTS["django_app_superuser"]["password"],
]


def release_path(name: str) -> str:
    return os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", name)


def get(host, url: str, name: str = "mysite.test", extra: str = "") -> tuple[str, str]:
    """Status and body of an HTTPS request through nginx, with the site's name as Host and SNI."""
    result = host.run(
        f"curl -sk --max-time 10 --resolve {name}:443:127.0.0.1 -w '\\n%{{http_code}}' {extra} https://{name}{url}"
    )
    body, _, status = result.stdout.rpartition("\n")
    return status, body


def current(host) -> str:
    return host.check_output(f"readlink {ROOT}/current")


def manage(host, *args: str) -> str:
    return host.check_output(f"{ROOT}/bin/manage " + " ".join(args))


def test_release_serves_its_page_from_the_database_with_static_css(host):
    status, body = get(host, "/")
    assert status == "200", body
    assert "release 1" in body
    css = re.search(r'href="(/static/notes/site\.[0-9a-f]{12}\.css)"', body)
    assert css, body
    status, stylesheet = get(host, css.group(1))
    assert status == "200" and "#1d3557" in stylesheet
    headers = host.check_output(
        f"curl -sk -o /dev/null -D - --resolve mysite.test:443:127.0.0.1 https://mysite.test{css.group(1)}"
    ).lower()
    assert "cache-control: max-age=2592000" in headers
    page_headers = host.check_output("curl -sk -o /dev/null -D - --resolve mysite.test:443:127.0.0.1 https://mysite.test/").lower()
    assert page_headers.count("strict-transport-security:") == 1, page_headers
    assert page_headers.count("x-frame-options:") == 1, page_headers
    assert current(host).startswith(f"{ROOT}/releases/")


def test_app_runs_as_its_user_behind_a_private_socket(host):
    socket = host.file("/run/mysite/uwsgi.sock")
    assert socket.is_socket and socket.user == "mysite" and socket.group == "www-data" and socket.mode == 0o660
    users = host.check_output("ps -o user= -C uwsgi-core | sort -u").split()
    assert "mysite" in users and "root" not in users


def test_secrets_are_readable_by_root_and_the_app_group_only(host):
    env = host.file(f"{ROOT}/shared/config/app.env")
    assert (env.user, env.group, env.mode) == ("root", "mysite", 0o640)
    assert INPUTS["django_app_secret_key"] in env.content_string
    config = host.file(f"{ROOT}/shared/config")
    assert (config.user, config.group, config.mode) == ("root", "mysite", 0o750)
    # Nowhere else: app server configuration, supervisor files, process arguments.
    elsewhere = host.run("cat /etc/uwsgi/apps/*.ini /etc/supervisor/conf.d/*.conf; ps -eo args").stdout
    for secret in SECRETS:
        assert secret not in elsewhere
    assert host.run("sudo -u nobody cat /srv/mysite/shared/config/app.env").rc != 0
    # The database file is the app's, in a directory nobody else may enter.
    assert host.file(f"{ROOT}/shared/data/db.sqlite3").user == "mysite"
    data = host.file(f"{ROOT}/shared/data")
    assert data.user == "mysite" and data.mode & 0o007 == 0


def test_deploy_check_reports_no_issues(host):
    out = host.run(f"{ROOT}/bin/manage check --deploy")
    assert out.rc == 0, out.stderr
    assert "System check identified no issues (0 silenced)." in out.stdout + out.stderr


def test_superuser_created_from_the_inventory(host):
    code = "from django.contrib.auth.models import User; print(User.objects.filter(is_superuser=True, username='admin').count())"
    assert manage(host, "shell", "-c", f'"{code}"').split()[-1] == "1"


def test_startproject_project_serves_admin_login_with_its_css(host):
    status, body = get(host, "/admin/login/", name="plain.test")
    assert status == "200" and "Django administration" in body
    assert 'href="/static/admin/css/base.css"' in body
    status, css = get(host, "/static/admin/css/base.css", name="plain.test")
    assert status == "200" and "--primary" in css
    # The generated settings turned DEBUG off and HTTPS-only cookies on.
    status, body = get(host, "/no-such-page/", name="plain.test")
    assert status == "404" and "URLconf" not in body
    headers = host.check_output(
        "curl -sk -o /dev/null -D - --resolve plain.test:443:127.0.0.1 https://plain.test/admin/login/"
    ).lower()
    assert re.search(r"set-cookie: csrftoken=.*; secure", headers), headers


@pytest.fixture(scope="module")
def v2_deploy():
    """Write a note on v1, then deploy v2 (a migration and a new page) with -v."""
    hosts = molecule_hosts()
    for h in hosts:
        manage(h, "shell", "-c", '"from notes.models import Note; Note.objects.create(text=\'kept across releases\')"')
    before = {h.backend.host: current(h) for h in hosts}
    result = run_playbook("converge.yml", extra_vars={"mysite_source_path": release_path("v2")}, verbose=True)
    return hosts, before, result


def test_new_release_switches_keeps_the_old_one_and_migrates(v2_deploy):
    hosts, before, result = v2_deploy
    text = output(result)
    assert result.returncode == 0, text
    for secret in SECRETS:
        assert secret not in text
    for h in hosts:
        now = current(h)
        assert now != before[h.backend.host]
        assert h.file(before[h.backend.host]).is_directory
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body and "kept across releases" in body
        assert "[X] 0002_note_pinned" in manage(h, "showmigrations", "notes")
        # The unchanged requirements reuse the virtualenv.
        assert h.file(f"{now}/.venv").linked_to == h.file(f"{before[h.backend.host]}/.venv").linked_to


def test_same_release_again_changes_nothing(v2_deploy):
    result = run_playbook("converge.yml", extra_vars={"mysite_source_path": release_path("v2")})
    assert result.returncode == 0, output(result)
    assert all(c["changed"] == 0 for c in recap(result).values()), output(result)


def test_release_that_cannot_import_never_goes_live(v2_deploy):
    hosts = molecule_hosts()
    before = {h.backend.host: current(h) for h in hosts}
    result = run_playbook("converge.yml", extra_vars={"mysite_source_path": release_path("broken")})
    text = output(result)
    assert result.returncode != 0
    assert "No module named 'notes_helpers_missing'" in text
    for h in hosts:
        assert current(h) == before[h.backend.host]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body


def test_failed_check_after_switch_rolls_back(v2_deploy):
    hosts = molecule_hosts()
    before = {h.backend.host: current(h) for h in hosts}
    result = run_playbook(
        "converge.yml",
        extra_vars={"mysite_source_path": release_path("unhealthy"), "mysite_check_before_switch": False},
    )
    text = output(result)
    assert result.returncode != 0
    assert "failed its check after the switch" in text and "500" in text, text
    assert "current is back on" in text
    for h in hosts:
        assert current(h) == before[h.backend.host]
        status, body = get(h, "/health/")
        assert status == "200" and body.startswith("ok 2")


def test_git_source_release_is_the_commit(v2_deploy):
    hosts = molecule_hosts()
    source = {"type": "git", "repo": "file:///srv/git/mysite.git", "version": "main"}
    result = run_playbook("converge.yml", extra_vars={"mysite_source": source})
    assert result.returncode == 0, output(result)
    for h in hosts:
        commit = h.check_output("git --git-dir=/srv/git/mysite.git rev-parse main")
        assert current(h) == f"{ROOT}/releases/{commit[:12]}"
        status, body = get(h, "/")
        assert status == "200" and "release 1" in body
        # Releases beyond django_app_keep_releases (5) are gone; current and previous stay.
        assert len(h.check_output(f"ls {ROOT}/releases").split()) <= 5
    again = run_playbook("converge.yml", extra_vars={"mysite_source": source})
    assert again.returncode == 0, output(again)
    assert all(c["changed"] == 0 for c in recap(again).values()), output(again)


BAD_INPUTS = [
    ({"django_app_debug": True}, "django_app_debug must be false", "django_app_debug"),
    ({"django_app_secret_key": "short-key"}, "at least 50 characters", "django_app_secret_key"),
    ({"django_app_allowed_hosts": ["*"]}, "no wildcard", "django_app_allowed_hosts"),
    ({"django_app_database": {"engine": "postgresql", "name": "mysite", "user": "mysite"}},
     "PostgreSQL needs name, user and", "django_app_database"),
    ({"mysite_source_path": "/nonexistent/mysite"}, "is not a directory on the controller", "django_app_source.path"),
    ({"django_app_settings_module": "mysite/settings"}, "must name the settings module", "django_app_settings_module"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[2] for c in BAD_INPUTS])
def test_bad_input_fails_before_any_change(case):
    bad, message, variable = case
    assert_refused_before_change(
        molecule_hosts(), bad, message, variable, [f"{ROOT}/shared/config", f"{ROOT}/bin", "/etc/uwsgi"],
        state=current,
    )
