"""The example project deployed as releases behind nginx + uWSGI, and a plain startproject project."""

from __future__ import annotations

import os
import re

import pytest
from wsgistack_testlib import (
    assert_recap,
    assert_refused_before_change,
    molecule_host_names,
    molecule_hosts,
    output,
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


def static_inodes(host, release: str) -> dict[str, int]:
    """Inode of every collected static file of a release, by its path below _static."""
    out = host.check_output(f"find {release}/_static -type f -printf '%P %i\\n'")
    return {path: int(inode) for path, inode in (line.rsplit(" ", 1) for line in out.splitlines())}


def releases_by_variant(host) -> dict[str, str]:
    """The release directories of mysite, named after the test variant their code is:
    v1 (examples/mysite), v2, broken, unhealthy (see prepare.yml)."""
    script = (
        f"for d in {ROOT}/releases/*; do"
        " if grep -q notes_helpers_missing $d/notes/views.py; then v=broken;"
        " elif grep -q missing_table $d/notes/views.py; then v=unhealthy;"
        " elif [ -e $d/notes/migrations/0002_note_pinned.py ]; then v=v2; else v=v1; fi;"
        " echo $v $d; done"
    )
    variants = {}
    for line in host.check_output(script).splitlines():
        variant, path = line.split()
        assert variant not in variants, host.check_output(f"ls -l {ROOT}/releases")
        variants[variant] = path
    return variants


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


def test_builtin_health_check_answers_only_on_the_host(host):
    """The startproject project deployed with no health setting: the deployment's own check
    answers on the host (Django and its database, the release's id), and a client from
    elsewhere gets the project's 404 for the same path."""
    release = os.path.basename(host.check_output("readlink /srv/plainsite/current"))
    status, body = get(host, "/-/wsgistack-health", name="plain.test")
    assert (status, body) == ("200", f"ok {release}")
    address = host.check_output("hostname -I").split()[0]
    assert not address.startswith("127.")
    remote = host.run(
        f"curl -sk --max-time 10 --resolve plain.test:443:{address} -w '\\n%{{http_code}}' https://plain.test/-/wsgistack-health"
    ).stdout
    body, _, status = remote.rpartition("\n")
    assert status == "404" and "ok " not in body, remote
    # The database is part of the answer: without it the check fails, naming it.
    data = "/srv/plainsite/shared/data"
    assert host.file(f"{data}/db.sqlite3").is_file
    mode = host.check_output(f"stat -c %a {data}")
    host.check_output(f"chmod 000 {data}")
    try:
        status, body = get(host, "/-/wsgistack-health", name="plain.test")
    finally:
        host.check_output(f"chmod {mode} {data}")
    assert status == "503" and body.startswith("database default: OperationalError"), (status, body)
    assert get(host, "/-/wsgistack-health", name="plain.test")[0] == "200"


def test_only_the_newest_backups_are_kept():
    """The newest django_app_backups_keep database dumps in shared/backups stay, older ones go.
    The scenario runs SQLite, so there is nothing to pg_dump: the dumps are placed by the test
    (the topology scenario checks that a migration on PostgreSQL writes one)."""
    hosts = molecule_hosts()
    backups = f"{ROOT}/shared/backups"
    dumps = [f"2024010{day}T000000Z-before-test{day}.dump" for day in range(1, 5)]
    for h in hosts:
        for day, name in enumerate(dumps, start=1):
            h.check_output(f"umask 077 && echo dump{day} > {backups}/{name} && touch -d 2024-01-0{day} {backups}/{name}")
        # Not a dump: never removed.
        h.check_output(f"touch -d 2023-01-01 {backups}/README")
    try:
        result = run_playbook("converge.yml", extra_vars={"django_app_backup_before_migrate": True,
                                                          "django_app_backups_keep": 2})
        assert result.returncode == 0, output(result)
        # The removal of the two oldest dumps is the run's only change.
        assert_recap(result, changed=1, failed=0)
        for h in hosts:
            assert sorted(h.check_output(f"ls {backups}").split()) == sorted(dumps[2:] + ["README"])
            assert h.file(f"{backups}/{dumps[3]}").content_string == "dump4\n"
    finally:
        for h in hosts:
            h.check_output(f"rm -f {backups}/*.dump {backups}/README")


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


def test_unchanged_static_files_are_not_copied_again(v2_deploy):
    """v2 changes no static file: collectstatic copies none, and every collected file of v2 is a
    hard link to v1's. Only what Django's manifest storage writes anew on every run differs:
    the manifest and the hashed CSS/JS copies whose URLs it rewrites."""
    hosts, before, result = v2_deploy
    text = output(result)
    assert result.returncode == 0, text
    # collectstatic's summary, printed by -v (once per host, maybe twice: stdout and stdout_lines).
    copied = re.findall(r"(\d+) static files? copied", text)
    assert len(copied) >= len(hosts) and set(copied) == {"0"}, copied
    rewritten = re.compile(r"(\.[0-9a-f]{12}\.(css|js)|^staticfiles\.json)$")
    for h in hosts:
        old, new = static_inodes(h, before[h.backend.host]), static_inodes(h, current(h))
        assert sorted(old) == sorted(new), set(old) ^ set(new)
        assert "notes/site.css" in new, sorted(new)
        linked = {path for path in new if new[path] == old[path]}
        assert len(linked) > 100, len(linked)
        assert {path for path in new if not rewritten.search(path)} <= linked, sorted(set(new) - linked)


def test_same_release_again_changes_nothing(v2_deploy):
    result = run_playbook("converge.yml", extra_vars={"mysite_source_path": release_path("v2")})
    assert result.returncode == 0, output(result)
    assert_recap(result, changed=0, failed=0)


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


GIT_REPO = "file:///srv/git/mysite.git"


def git_commit(host, version: str) -> str:
    """The full commit id a branch, tag or commit names in the instance's repository
    (prepare.yml: tag v1.0.0 is v1, main is one commit ahead with v2)."""
    return host.check_output(f"git --git-dir=/srv/git/mysite.git rev-parse '{version}^{{commit}}'")


def git_inputs(version: str) -> dict:
    return {"mysite_source": {"type": "git", "repo": GIT_REPO, "version": version}, "django_app_keep_releases": 3}


def test_git_source_release_is_the_commit_and_old_releases_are_pruned(v2_deploy):
    """A tag one commit behind the default branch deploys the tagged commit. The git release
    makes five on disk; with django_app_keep_releases: 3 the two oldest (v1, then broken) go,
    while the new current, the previous (v2) and the newest other stay."""
    hosts = molecule_hosts()
    before = {}
    for h in hosts:
        before[h.backend.host] = releases_by_variant(h)
        # Deployed in this order by the scenario and the tests above; v2 is live again.
        assert sorted(before[h.backend.host]) == ["broken", "unhealthy", "v1", "v2"], before[h.backend.host]
        assert current(h) == before[h.backend.host]["v2"]
        assert git_commit(h, "v1.0.0") != git_commit(h, "main")
    result = run_playbook("converge.yml", extra_vars=git_inputs("v1.0.0"))
    assert result.returncode == 0, output(result)
    for h in hosts:
        commit = git_commit(h, "v1.0.0")
        assert current(h) == f"{ROOT}/releases/{commit[:12]}"
        status, body = get(h, "/")
        assert status == "200" and "release 1" in body
        old = before[h.backend.host]
        kept = h.check_output(f"ls {ROOT}/releases").split()
        assert sorted(kept) == sorted([commit[:12]] + [os.path.basename(old[v]) for v in ("v2", "unhealthy")]), (
            kept, old)
        for gone in ("v1", "broken"):
            assert not h.file(old[gone]).exists, gone
    again = run_playbook("converge.yml", extra_vars=git_inputs("v1.0.0"))
    assert again.returncode == 0, output(again)
    assert_recap(again, changed=0, failed=0)


def test_git_branch_and_commit_pins_deploy_exactly_that_commit(v2_deploy):
    """The default branch deploys its head (v2); pinning the full id of the older commit goes
    back to it, onto the release already on disk; a version that names nothing is refused."""
    hosts = molecule_hosts()
    result = run_playbook("converge.yml", extra_vars=git_inputs("main"))
    assert result.returncode == 0, output(result)
    for h in hosts:
        head = git_commit(h, "main")
        assert current(h) == f"{ROOT}/releases/{head[:12]}"
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body
    older = git_commit(hosts[0], "v1.0.0")
    result = run_playbook("converge.yml", extra_vars=git_inputs(older))
    assert result.returncode == 0, output(result)
    for h in hosts:
        assert git_commit(h, "v1.0.0") == older
        assert current(h) == f"{ROOT}/releases/{older[:12]}"
        status, body = get(h, "/")
        assert status == "200" and "release 1" in body
    result = run_playbook("converge.yml", extra_vars=git_inputs("no-such-branch"))
    text = output(result)
    assert result.returncode != 0
    assert "django_app_source.version 'no-such-branch' names no commit" in text, text
    for h in hosts:
        assert current(h) == f"{ROOT}/releases/{older[:12]}"


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
