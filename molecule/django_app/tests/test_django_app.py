"""The example project deployed as releases behind nginx + uWSGI, and a plain startproject project."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time

import pytest
from wsgistack_testlib import (
    answer_of,
    assert_recap,
    molecule_host_names,
    molecule_hosts,
    output,
    put_file,
    refusal_battery,
    run_playbook,
    scenario_group_vars,
    sent_as_stored,
    site_get,
    site_get_encoded,
    site_headers,
    start_request_loop,
    stop_request_loop,
    wait_for,
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
    return site_get(host, name, url, extra)


def current(host) -> str:
    return host.check_output(f"readlink {ROOT}/current")


DEPLOY = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ""), "playbooks", "deploy.yml")


# What the scenario's converge set up, as site.yml's inventory would say it.
STACK = {"wsgistack_stack": "nginx_uwsgi", "wsgistack_tls": "self_signed"}


def deploy(extra_vars: dict, verbose: bool | int = False):
    """playbooks/deploy.yml, as users deploy a new release of mysite (no web server work)."""
    return run_playbook(DEPLOY, extra_vars=STACK | extra_vars, verbose=verbose)


def code_id(release: str) -> str:
    """The code part of a release's id (<code id>-<configuration digest>)."""
    code, _, config = os.path.basename(release).partition("-")
    assert re.fullmatch(r"[0-9a-f]{12}", code) and re.fullmatch(r"[0-9a-f]{8}", config), release
    return code


def manage(host, *args: str) -> str:
    return host.check_output(f"{ROOT}/bin/manage " + " ".join(args))


def piped(text: str) -> str:
    """A shell pipe's start that gives `text` on standard input without it in any process's
    arguments (the process list is searched for secrets while the tests run)."""
    return f"echo {base64.b64encode(text.encode()).decode()} | base64 -d | "


def static_inodes(host, release: str) -> dict[str, int]:
    """Inode of every collected static file of a release, by its path below _static."""
    out = host.check_output(f"find {release}/_static -type f -printf '%P %i\\n'")
    return {path: int(inode) for path, inode in (line.rsplit(" ", 1) for line in out.splitlines())}


def releases_by_variant(host) -> dict[str, str]:
    """The release directories of mysite, named after the test variant their code is:
    v1 (examples/mysite), v2, broken, unhealthy, badmigration (see prepare.yml)."""
    script = (
        f"for d in {ROOT}/releases/*; do"
        " if [ -e $d/notes/migrations/0003_refuses.py ]; then v=badmigration;"
        " elif grep -q notes_helpers_missing $d/notes/views.py; then v=broken;"
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


def backup_contents(host, path: str) -> tuple[list[str], list[str]]:
    """The notes migrations recorded in a SQLite database file and the texts of its notes."""
    script = (
        "import json, sqlite3, sys; db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True);"
        " print(json.dumps([[r[0] for r in db.execute(\"SELECT name FROM django_migrations WHERE app = 'notes'\")],"
        " [r[0] for r in db.execute('SELECT text FROM notes_note')]]))"
    )
    migrations, texts = json.loads(host.check_output(f"python3 -c {shlex.quote(script)} {shlex.quote(path)}"))
    return sorted(migrations), texts


def test_release_serves_its_page_from_the_database_with_static_css(host):
    status, body = get(host, "/")
    assert status == "200", body
    assert "release 1" in body
    css = re.search(r'href="(/static/notes/site\.[0-9a-f]{12}\.css)"', body)
    assert css, body
    status, stylesheet = get(host, css.group(1))
    assert status == "200" and "#1d3557" in stylesheet
    headers = site_headers(host, "mysite.test", css.group(1))
    assert "cache-control: public, max-age=31536000, immutable" in headers
    page_headers = site_headers(host, "mysite.test", "/")
    assert page_headers.count("strict-transport-security:") == 1, page_headers
    assert page_headers.count("x-frame-options:") == 1, page_headers
    assert current(host).startswith(f"{ROOT}/releases/")


def test_app_runs_as_its_user_behind_a_private_socket(host):
    socket = host.file("/run/mysite/uwsgi.sock")
    assert socket.is_socket and socket.user == "mysite" and socket.group == "www-data" and socket.mode == 0o660
    users = host.check_output("ps -o user= -C uwsgi-core | sort -u").split()
    assert "mysite" in users and "root" not in users


def test_secrets_are_readable_by_root_and_the_app_group_only(host):
    """The release's configuration (environment file, secrets) is in its _config, readable by
    root and the app's group only; the release directory around it is world-readable."""
    env = host.file(f"{ROOT}/current/_config/app.env")
    assert (env.user, env.group, env.mode) == ("root", "mysite", 0o640)
    assert INPUTS["django_app_secret_key"] in env.content_string
    config = host.file(f"{ROOT}/current/_config")
    assert (config.user, config.group, config.mode) == ("root", "mysite", 0o750)
    assert host.file(current(host)).mode == 0o755
    # Nowhere else: app server configuration, supervisor files, process arguments.
    elsewhere = host.run("cat /etc/uwsgi/apps/*.ini /etc/supervisor/conf.d/*.conf; ps -eo args").stdout
    for secret in SECRETS:
        assert secret not in elsewhere
    assert host.run(f"sudo -u nobody cat {ROOT}/current/_config/app.env").rc != 0
    assert host.run(f"sudo -u nobody ls {ROOT}/current/_config").rc != 0
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
    # The generated settings collect under hashed names: the page links the hashed copy, which
    # browsers may keep for a year; the plain name is revalidated on every use.
    hashed = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', body)
    assert hashed, body
    status, css = get(host, hashed.group(1), name="plain.test")
    assert status == "200" and "--primary" in css
    assert "cache-control: public, max-age=31536000, immutable" in site_headers(host, "plain.test", hashed.group(1))
    assert "cache-control: no-cache" in site_headers(host, "plain.test", "/static/admin/css/base.css")
    # The generated settings turned DEBUG off and HTTPS-only cookies on.
    status, body = get(host, "/no-such-page/", name="plain.test")
    assert status == "404" and "URLconf" not in body
    headers = site_headers(host, "plain.test", "/admin/login/")
    assert re.search(r"set-cookie: csrftoken=.*; secure", headers), headers


def test_static_files_are_sent_in_the_form_compressed_at_deploy(host):
    """Each release holds the Brotli and gzip forms of its text files beside them, root's like
    the files; nginx sends the form the client accepts, with the file's type, its cache
    header and Vary, and the same bytes once decoded. A client that accepts neither gets the
    file itself."""
    status, body = get(host, "/admin/login/", name="plain.test")
    assert status == "200", body
    hashed = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', body).group(1)
    status, plain = get(host, hashed, name="plain.test")
    assert status == "200" and "--primary" in plain
    release = host.check_output("readlink /srv/plainsite/current")
    on_disk = f"{release}/_static{hashed.removeprefix('/static')}"
    for encoding, suffix in (("br", ".br"), ("gzip", ".gz")):
        form = host.file(on_disk + suffix)
        assert (form.user, form.mode) == ("root", 0o644), (form.user, form.mode)
        assert form.size < host.file(on_disk).size
        status, headers, decoded = site_get_encoded(host, "plain.test", hashed, encoding)
        assert status == "200" and decoded == plain, (encoding, status, decoded[:200])
        assert sent_as_stored(host, headers, on_disk + suffix), headers
        assert "content-type: text/css" in headers and "vary: accept-encoding" in headers, headers
        assert "cache-control: public, max-age=31536000, immutable" in headers, headers
    assert "content-encoding" not in site_headers(host, "plain.test", hashed)


def test_split_settings_project_serves_its_environments_with_their_secret_files(host):
    """examples/splitsite as it is: manage.py and config/ in the app/ folder, settings and
    requirements per environment, secrets read from .config_secret/*.json at the repository root.
    Each environment's page shows what its own JSON file (from the inventory) says, its admin
    uses the project folder's templates and its own collected CSS, and bin/manage runs there."""
    for name, env in (("split.test", "deploy"), ("dev.split.test", "dev")):
        status, body = get(host, "/", name=name)
        assert (status, body) == ("200", f"splitsite {env} from vault\n")
        status, body = get(host, "/admin/login/", name=name)
        assert status == "200" and "splitsite administration" in body, body
        status, css = get(host, "/static/admin/css/base.css", name=name)
        assert status == "200" and "--primary" in css
    status, css = get(host, "/static/splitsite/site.css", name="split.test")
    assert status == "200" and "sans-serif" in css
    for app, own, other in (("splitsite", "deploy", "dev"), ("splitdev", "dev", "deploy")):
        release = host.check_output(f"readlink -f /srv/{app}/current")
        for name in ("common", own):
            link = host.file(f"{release}/.config_secret/settings_{name}.json")
            target = host.file(link.linked_to)
            assert link.is_symlink and target.path.startswith(f"{release}/_config/"), link.linked_to
            assert (target.user, target.group, target.mode) == ("root", app, 0o640)
            assert json.loads(target.content_string)["django"]
        assert not host.file(f"{release}/.config_secret/settings_{other}.json").exists
        assert host.run(f"sudo -u nobody cat {release}/.config_secret/settings_{own}.json").rc != 0
        out = host.run(f"/srv/{app}/bin/manage diffsettings")
        assert out.rc == 0, out.stderr
        assert "ROOT_URLCONF = 'config.urls'" in out.stdout
        assert f"WSGI_APPLICATION = 'config.wsgi.{own}.application'" in out.stdout
        assert host.check_output(f"/srv/{app}/bin/python -c 'import os; print(os.getcwd())'") == f"{release}/app"


def test_a_secret_file_changed_in_the_inventory_is_a_release_of_that_site_alone(host, ps_samples):
    """Another value in one environment's JSON secrets (django_app_secret_files) makes a new
    release of that site, which serves it; the other sites keep their releases and their uWSGI
    processes. The run is at -vvv: test_no_secret_in_verbose_output... reads it."""
    def state():
        return {app: (host.check_output(f"readlink /srv/{app}/current"),
                      host.check_output(f"pgrep -d, -f '^{app} uWSGI'"))
                for app in ("mysite", "plainsite", "splitsite", "splitdev")}

    before = state()
    result = VERBOSE_RUNS["converge"] = run_playbook("converge.yml", extra_vars={"splitsite_banner": "deploy, second edition"},
                                                      verbose=3)
    assert result.returncode == 0, output(result)[-5000:]
    assert get(host, "/", name="split.test") == ("200", "splitsite deploy, second edition\n")
    after = state()
    assert after["splitsite"][0] != before["splitsite"][0]
    assert host.file(before["splitsite"][0]).is_directory
    others = [app for app in before if app != "splitsite"]
    assert {app: after[app] for app in others} == {app: before[app] for app in others}


def test_builtin_health_check_answers_only_on_the_host(host):
    """The startproject project deployed with no health setting: the deployment's own check
    answers on the host (Django and its database, the release's id), and a client from
    elsewhere gets the project's 404 for the same path."""
    release = os.path.basename(host.check_output("readlink /srv/plainsite/current"))
    status, body = get(host, "/-/wsgistack-health", name="plain.test")
    assert (status, body) == ("200", f"ok {release}")
    address = host.check_output("hostname -I").split()[0]
    assert not address.startswith("127.")
    status, body = answer_of(host, f"--resolve plain.test:443:{address} https://plain.test/-/wsgistack-health")
    assert status == "404" and "ok " not in body, (status, body)
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


BACKUPS = f"{ROOT}/shared/backups"
# Dumps of earlier deploys, placed by v2_deploy with older dates than anything it writes.
OLD_DUMPS = [f"2024010{day}T000000Z-before-test{day}.dump" for day in range(1, 5)]


@pytest.fixture(scope="module")
def v2_deploy():
    """Write a note on v1 and place four old dumps and a README in shared/backups, then deploy
    v2 (a migration and a new page) with -v and django_app_backups_keep: 2."""
    hosts = molecule_hosts()
    for h in hosts:
        manage(h, "shell", "-c", '"from notes.models import Note; Note.objects.create(text=\'kept across releases\')"')
        for day, name in enumerate(OLD_DUMPS, start=1):
            h.check_output(f"umask 077 && echo dump{day} > {BACKUPS}/{name} && touch -d 2024-01-0{day} {BACKUPS}/{name}")
        # Not a backup: never removed.
        h.check_output(f"touch -d 2023-01-01 {BACKUPS}/README")
    before = {h.backend.host: current(h) for h in hosts}
    result = deploy({"mysite_source_path": release_path("v2"),
                                                      "django_app_backups_keep": 2}, verbose=True)
    return hosts, before, result


def test_published_facts_name_what_is_on_the_host(tmp_path):
    """What the role publishes for a play that serves the app itself (django_app_deployment and
    django_app_uwsgi_app) names the app's paths and release as they are on the host."""
    result = run_playbook("facts.yml", extra_vars={"facts_dir": str(tmp_path)})
    assert result.returncode == 0, output(result)
    for h in molecule_hosts():
        facts = json.loads((tmp_path / f"{h.backend.host}.json").read_text())
        deployment, app = facts["deployment"], facts["uwsgi_app"]
        assert (deployment["name"], deployment["root"], deployment["user"]) == ("mysite", ROOT, "mysite"), deployment
        assert deployment["current"] == f"{ROOT}/current"
        assert h.file(deployment["current"]).is_symlink and h.file(deployment["current"]).linked_to == deployment["release"]
        assert deployment["release"] == f"{ROOT}/releases/{deployment['release_id']}", deployment
        config = h.file(deployment["config_dir"])
        assert config.is_directory and config.group == deployment["group"] and config.mode & 0o007 == 0, deployment
        assert h.file(deployment["wsgi_script"]).is_file
        assert deployment["wsgi_module"] == app["module"] and deployment["virtualenv"] == app["virtualenv"]
        assert h.file(f"{deployment['virtualenv']}/bin/python").exists
        assert h.file(deployment["static_root"]).is_directory and h.file(deployment["media_root"]).is_directory
        assert deployment["server_names"] == INPUTS["django_app_allowed_hosts"]
        assert not {"socket"} & set(deployment)


def test_only_the_newest_backups_are_kept(v2_deploy):
    """v2's migration is preceded by a backup (SQLite's online backup: the scenario is
    production-like, where backups are on by default); then only the newest
    django_app_backups_keep (2) backups stay: the new one and the newest old dump."""
    hosts, _, result = v2_deploy
    assert result.returncode == 0, output(result)
    try:
        for h in hosts:
            kept = h.check_output(f"ls {BACKUPS}").split()
            new = [name for name in kept if name.endswith(".sqlite3")]
            assert sorted(kept) == sorted([OLD_DUMPS[3], "README"] + new) and len(new) == 1, kept
            assert h.file(f"{BACKUPS}/{OLD_DUMPS[3]}").content_string == "dump4\n"
            backup = h.file(f"{BACKUPS}/{new[0]}")
            assert (backup.user, backup.group, backup.mode) == ("root", "root", 0o600)
            # The database as it was just before v2 migrated it.
            migrations, texts = backup_contents(h, backup.path)
            assert migrations == ["0001_initial"], migrations
            assert "kept across releases" in texts, texts
    finally:
        for h in hosts:
            h.check_output(f"rm -f {BACKUPS}/*.dump {BACKUPS}/README")


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


def test_unchanged_static_files_are_kept_once(v2_deploy):
    """v2 changes no static file: v2 holds the same collected files as v1, and each one that
    is the same as v1's is a hard link to it (one copy on disk). Only what Django's manifest
    storage may write otherwise on every run can differ: the manifest and the hashed CSS/JS
    copies whose URLs it rewrites, and their compressed forms."""
    hosts, before, result = v2_deploy
    text = output(result)
    assert result.returncode == 0, text
    rewritten = re.compile(r"(\.[0-9a-f]{12}\.(css|js)(\.gz|\.br)?|^staticfiles\.json)$")
    for h in hosts:
        old, new = static_inodes(h, before[h.backend.host]), static_inodes(h, current(h))
        assert sorted(old) == sorted(new), set(old) ^ set(new)
        assert "notes/site.css" in new, sorted(new)
        linked = {path for path in new if new[path] == old[path]}
        assert len(linked) > 100, len(linked)
        assert {path for path in new if not rewritten.search(path)} <= linked, sorted(set(new) - linked)


def authenticates(host, username: str, password: str) -> bool:
    code = (f"from django.contrib.auth import authenticate; "
            f"print(authenticate(username={username!r}, password={password!r}) is not None)")
    return host.check_output(piped(code) + f"{ROOT}/bin/manage shell").split()[-1] == "True"


def test_rotated_superuser_password_is_set_on_the_next_run(v2_deploy):
    """The vault's superuser password changes: the next run sets it (and says changed), the
    old one stops working, the release stays; a run with the same password changes nothing.
    (The deploys of the tests below, with the inventory's password, set it back.)"""
    hosts = v2_deploy[0]
    old = INPUTS["django_app_superuser"]
    rotated = old | {"password": "rotated-" + old["password"][::-1]}
    live = {h.backend.host: current(h) for h in hosts}
    for run in range(2):
        result = deploy({"mysite_source_path": release_path("v2"), "django_app_superuser": rotated})
        assert result.returncode == 0, output(result)
        assert_recap(result, changed=1 - run, failed=0)
    for h in hosts:
        assert authenticates(h, old["username"], rotated["password"])
        assert not authenticates(h, old["username"], old["password"])
        assert current(h) == live[h.backend.host]


def test_release_that_cannot_import_never_goes_live(v2_deploy, ps_samples):
    """At -vvv, with a private package index: test_no_secret_in_verbose_output... reads it."""
    hosts = molecule_hosts()
    before = {h.backend.host: current(h) for h in hosts}
    result = VERBOSE_RUNS["failed deploy"] = deploy({"mysite_source_path": release_path("broken")} | PRIVATE_INDEX,
                                                     verbose=3)
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
    # Checked through nginx only, on its own health page (which this release breaks).
    result = deploy({"mysite_source_path": release_path("unhealthy"), "mysite_check_before_switch": False,
                     "django_app_health_check_path": "/health/"})
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


def git_inputs(version: str, repo: str = GIT_REPO) -> dict:
    return {"mysite_source": {"type": "git", "repo": repo, "version": version}, "django_app_keep_releases": 3}


# The instance's repository over HTTP behind basic authentication, with the credentials in
# the URL as private repositories are often given.
GIT_TOKEN = "s3cret-git-token-5e2a"
GIT_HTTP_REPO = f"http://deploy:{GIT_TOKEN}@127.0.0.1:8765/mysite.git"
GIT_HTTP_SERVER = f"""
import base64, functools, http.server
EXPECTED = "Basic " + base64.b64encode(b"deploy:{GIT_TOKEN}").decode()


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != EXPECTED:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        super().do_GET()


http.server.ThreadingHTTPServer(("127.0.0.1", 8765), functools.partial(Handler, directory="/srv/git")).serve_forever()
"""


def serve_git_over_http(host) -> None:
    """The repository over git's plain HTTP protocol, to requests with the right credentials only."""
    put_file(host, "/tmp/wsgistack_git_http.py", GIT_HTTP_SERVER, mode="0600")
    host.check_output("systemctl stop wsgistack-git-http 2>/dev/null; systemctl reset-failed wsgistack-git-http 2>/dev/null;"
                      " systemd-run --unit wsgistack-git-http --quiet python3 /tmp/wsgistack_git_http.py")
    refs = "http://127.0.0.1:8765/mysite.git/info/refs"
    assert wait_for(lambda: host.run(f"curl -s -o /dev/null -w '%{{http_code}}' {refs}").stdout == "401", 20)
    assert host.run(piped(f'user = "deploy:{GIT_TOKEN}"') + f"curl -sf -K - {refs}").rc == 0


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
    result = deploy(git_inputs("v1.0.0"))
    assert result.returncode == 0, output(result)
    for h in hosts:
        commit = git_commit(h, "v1.0.0")
        assert code_id(current(h)) == commit[:12]
        status, body = get(h, "/")
        assert status == "200" and "release 1" in body
        old = before[h.backend.host]
        kept = h.check_output(f"ls {ROOT}/releases").split()
        live = os.path.basename(current(h))
        assert sorted(kept) == sorted([live] + [os.path.basename(old[v]) for v in ("v2", "unhealthy")]), (kept, old)
        for gone in ("v1", "broken"):
            assert not h.file(old[gone]).exists, gone


def test_git_branch_and_commit_pins_deploy_exactly_that_commit(v2_deploy, ps_samples):
    """The default branch deploys its head (v2); pinning the full id of the older commit goes
    back to it, onto the release already on disk; a version that names nothing is refused."""
    hosts = molecule_hosts()
    for h in hosts:
        serve_git_over_http(h)
    # From the URL with credentials and a private package index, at -vvv: they appear nowhere
    # (test_no_secret_in_verbose_output... reads it too).
    result = VERBOSE_RUNS["deploy"] = deploy(git_inputs("main", GIT_HTTP_REPO) | PRIVATE_INDEX, verbose=3)
    assert result.returncode == 0, output(result)[-5000:]
    assert GIT_TOKEN not in output(result)
    for h in hosts:
        head = git_commit(h, "main")
        assert code_id(current(h)) == head[:12]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body
        repo = h.file(f"{ROOT}/repo.git")
        assert (repo.user, repo.mode) == ("root", 0o700)
        # git got the credentials from its environment, not from the URL it keeps.
        config = h.check_output(f"git config --file {ROOT}/repo.git/config remote.origin.url")
        assert config == "http://127.0.0.1:8765/mysite.git", config
        leaked = h.run(piped(GIT_TOKEN) + f"sudo -u nobody grep -rlsF -f - {ROOT} /etc /run /tmp").stdout
        assert leaked == "", leaked
        assert GIT_TOKEN not in h.check_output("ps -eo args")
    older = git_commit(hosts[0], "v1.0.0")
    result = deploy(git_inputs(older))
    assert result.returncode == 0, output(result)
    for h in hosts:
        assert git_commit(h, "v1.0.0") == older
        assert code_id(current(h)) == older[:12]
        status, body = get(h, "/")
        assert status == "200" and "release 1" in body
    result = deploy(git_inputs("no-such-branch"))
    text = output(result)
    assert result.returncode != 0
    assert "django_app_source.version 'no-such-branch' names no commit" in text, text
    for h in hosts:
        assert code_id(current(h)) == older[:12]
    # A repository that cannot be reached: the failure says so with the credentials masked.
    unreachable = f"http://deploy:{GIT_TOKEN}@127.0.0.1:9/mysite.git"
    result = deploy(git_inputs("main", unreachable), verbose=True)
    text = output(result)
    assert result.returncode != 0
    assert "Fetching django_app_source.repo http://***@127.0.0.1:9/mysite.git (version main) failed" in text, text
    assert GIT_TOKEN not in text
    for h in hosts:
        assert code_id(current(h)) == older[:12]


def test_failed_migration_keeps_the_live_release_and_its_backup(v2_deploy):
    """A release whose migration fails: it never goes live, requests during the run all get
    the live release's answers, the run names the migration and where the backup is, and the
    backup taken just before it holds the database as it was."""
    hosts = molecule_hosts()
    before, pages, backups = {}, {}, {}
    for h in hosts:
        before[h.backend.host] = current(h)
        pages[h.backend.host] = get(h, "/")
        assert pages[h.backend.host][0] == "200", pages
        backups[h.backend.host] = set(h.check_output(f"ls {ROOT}/shared/backups").split())
        start_request_loop(h, "mysite.test", port=443, tls=True, batch=20, pause=0.5)
    try:
        result = deploy({"mysite_source_path": release_path("badmigration")})
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    text = output(result)
    assert result.returncode != 0, text
    assert "Migration notes.0003_refuses of release" in text, text
    assert f"{before[hosts[0].backend.host]} keeps serving" in text, text
    assert "0003_refuses: this migration always fails" in text, text
    for h in hosts:
        report = reports[h.backend.host]
        assert report["failures"] == 0 and set(report["statuses"]) == {"200"}, report
        assert current(h) == before[h.backend.host]
        assert get(h, "/") == pages[h.backend.host]
        # The failed migration's transaction was rolled back: the live database never had it.
        assert "0003_refuses" not in backup_contents(h, f"{ROOT}/shared/data/db.sqlite3")[0]
        new = set(h.check_output(f"ls {ROOT}/shared/backups").split()) - backups[h.backend.host]
        assert len(new) == 1 and new.pop().endswith(".sqlite3"), new
        newest = h.check_output(f"ls -t {ROOT}/shared/backups/*.sqlite3 | head -1")
        assert (h.file(newest).user, h.file(newest).mode) == ("root", 0o600)
        migrations, texts = backup_contents(h, newest)
        assert migrations == ["0001_initial", "0002_note_pinned"], migrations
        assert "kept across releases" in texts, texts


def test_releases_playbook_lists_ids_sources_and_the_live_one():
    """playbooks/releases.yml after the deploys above: newest first, the live one marked, each
    with where it came from (a repository URL without its credentials)."""
    releases = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks", "releases.yml")
    result = run_playbook(releases)
    text = output(result)
    assert result.returncode == 0, text
    assert_recap(result, changed=0, failed=0)
    assert GIT_TOKEN not in text
    for h in molecule_hosts():
        live = os.path.basename(current(h))
        commit = git_commit(h, "v1.0.0")
        # One line per release in the message, as YAML: '* <id>  <made>  <origin>' for the live one.
        rows = re.findall(r"^\s+- '(\*| ) ([0-9a-f]{12}-[0-9a-f]{8}  .*)'$", text, re.M)
        lines = [f"{mark.strip()} {rest}".strip() for mark, rest in rows]
        marked = [line for line in lines if line.startswith("* ")]
        assert marked == [line for line in lines if line.startswith(f"* {live}  ")], lines
        # Made by the deploy of the tag (the pin by commit id later went back to it).
        assert len(marked) == 1 and f"git {GIT_REPO} v1.0.0 {commit[:12]}" in marked[0], lines
        # The release whose migration failed is on disk, newest of all; it came from a directory.
        assert lines[0].startswith(os.path.basename(releases_by_variant(h)["badmigration"]) + "  "), lines
        assert f"directory {release_path('badmigration')}" in lines[0], lines


MANAGE = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ""), "playbooks", "manage.yml")


def test_manage_playbook_runs_a_command_as_the_site_with_the_live_settings():
    """playbooks/manage.yml: a management command with quoted arguments runs in the live
    release as the site's user, with its settings and secrets, and shows what it printed; a
    failing command fails the run with Django's message; no command is refused in the first
    play, naming the variable."""
    # The secret shows as a digest only: neither it nor the command line may carry it.
    code = ("import hashlib, os, pwd; from django.conf import settings; "
            "print('ran-as', pwd.getpwuid(os.getuid()).pw_name, os.getcwd(), settings.SETTINGS_MODULE, "
            "hashlib.sha256(os.environ['MYSITE_API_TOKEN'].encode()).hexdigest()[:16])")
    result = run_playbook(MANAGE, extra_vars={"wsgistack_manage": f'shell -c "{code}"'})
    text = output(result)
    assert result.returncode == 0, text
    assert_recap(result, changed=1, failed=0)
    token = hashlib.sha256(INPUTS["django_app_secret_environment"]["MYSITE_API_TOKEN"].encode()).hexdigest()[:16]
    assert INPUTS["django_app_secret_environment"]["MYSITE_API_TOKEN"] not in text
    # Once, on the first web host (the site's database is shared by its web hosts).
    assert text.count("ran-as mysite ") == 1, text
    for h in molecule_hosts():
        live = h.check_output(f"readlink -f {ROOT}/current")
        assert f"ran-as mysite {live} mysite.settings.production {token}" in text, text
    failing = run_playbook(MANAGE, extra_vars={"wsgistack_manage": "no_such_command"})
    assert failing.returncode != 0 and "Unknown command: 'no_such_command'" in output(failing), output(failing)
    for missing in ({}, {"wsgistack_manage": " "}):
        refused = run_playbook(MANAGE, extra_vars=missing)
        text = output(refused)
        assert refused.returncode != 0 and "Name the management command" in text and "wsgistack_manage" in text, text
        assert "TASK [Run the management command]" not in text, text


ROLLBACK = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ""), "playbooks", "rollback.yml")
HEALTH = "/-/wsgistack-health"


def rollback(release: str | None = None, verbose: bool | int = False):
    extra = STACK | ({"release": release} if release is not None else {})
    return run_playbook(ROLLBACK, extra_vars=extra, verbose=verbose)


# A secret changed along with a setting, in the release the settings change makes.
NEW_TOKEN = "molecule-api-token-rotated-9d41"


def secrets_of(host, release: str) -> tuple[str, str]:
    """DJANGO_ENV and the API token the release runs with, as its app user's Python sees them."""
    out = host.check_output(f"DJANGO_APP_RELEASE={release} {ROOT}/bin/python -c "
                            "'import os; print(os.environ[\"DJANGO_ENV\"], os.environ[\"MYSITE_API_TOKEN\"])'")
    env, token = out.split()
    return env, token


def settings_of(host, release: str) -> tuple[str, str, str]:
    """ALLOWED_HOSTS, the root log level and the MYSITE_DAY_TWO environment variable ('-' when
    unset) Django runs with in the release."""
    code = ("import django, logging, os; django.setup(); from django.conf import settings; "
            "print(','.join(settings.ALLOWED_HOSTS), logging.getLevelName(logging.getLogger().level),"
            " os.environ.get('MYSITE_DAY_TWO', '-'))")
    hosts, level, day_two = host.check_output(f"DJANGO_APP_RELEASE={release} {ROOT}/bin/python -c {shlex.quote(code)}").split()
    return hosts, level, day_two


def environment_shown(host) -> str:
    status, body = get(host, "/")
    assert status == "200", body
    found = re.search(r'<p class="environment">environment (\S*)</p>', body)
    assert found, body
    return found.group(1)


ADMIN_CSS = "/static/admin/css/base.css"


def forms(host, release: str) -> tuple[int, int]:
    """How many Brotli and gzip forms of static files a release holds."""
    return tuple(int(host.check_output(f"find {release}/_static -name '*{suffix}' | wc -l")) for suffix in (".br", ".gz"))


def test_settings_change_alone_is_a_release_that_rollback_takes_back(ps_samples):
    """A change of settings alone (the environment's name, which the page shows, a host name,
    the log level, an environment variable, a secret, the static files' compressed forms) makes a new
    release of the same code: its own _config, the code hard-linked, live as a whole. Then
    rollback.yml goes back to the previous release and forward to a named one, each time
    with that release's settings live, while a request loop sees only answers of the two
    releases; a release that is not on the host is refused before anything changes."""
    hosts = molecule_hosts()
    inputs = git_inputs("v1.0.0")
    old = {}
    for h in hosts:
        old[h.backend.host] = current(h)
        assert environment_shown(h) == "staging"
        start_request_loop(h, "mysite.test", path=HEALTH, port=443, tls=True, batch=20, pause=0.5)
    try:
        changed = {"django_app_environment_name": "qa", "django_app_secret_environment": {"MYSITE_API_TOKEN": NEW_TOKEN},
                   "django_app_allowed_hosts": [*INPUTS["django_app_allowed_hosts"], "qa.mysite.test"],
                   "django_app_log_level": "INFO",
                   "django_app_environment": INPUTS["django_app_environment"] | {"MYSITE_DAY_TWO": "on"},
                   "django_app_static_precompress": ["gzip"]}
        result = deploy(inputs | changed, verbose=True)
        assert NEW_TOKEN not in output(result)
        assert result.returncode == 0, output(result)
        new = {}
        for h in hosts:
            before, now = old[h.backend.host], current(h)
            new[h.backend.host] = now
            assert now != before and code_id(now) == code_id(before), (before, now)
            assert environment_shown(h) == "qa"
            assert secrets_of(h, now) == ("qa", NEW_TOKEN)
            assert settings_of(h, now) == (",".join(changed["django_app_allowed_hosts"]), "INFO", "on")
            # The previous release keeps its own configuration.
            assert secrets_of(h, before) == ("staging", SECRETS[1])
            assert settings_of(h, before) == (",".join(INPUTS["django_app_allowed_hosts"]),
                                              INPUTS.get("django_app_log_level", "WARNING"), "-")
            # Static files compressed to gzip alone: no Brotli form, none sent.
            assert forms(h, now)[0] == 0 and forms(h, now)[1] > 0 and forms(h, before)[0] > 0, (forms(h, now), forms(h, before))
            status, sent, _ = site_get_encoded(h, "mysite.test", ADMIN_CSS, "br")
            assert status == "200" and "content-encoding: br" not in sent, sent
            status, sent, _ = site_get_encoded(h, "mysite.test", ADMIN_CSS, "gzip")
            assert status == "200" and sent_as_stored(h, sent, f"{now}/_static/admin/css/base.css.gz"), sent
            # Same code: hard links, not a second copy.
            assert h.file(f"{now}/manage.py").inode == h.file(f"{before}/manage.py").inode
            assert h.file(f"{now}/.venv").linked_to == h.file(f"{before}/.venv").linked_to
            assert h.file(f"{ROOT}/previous").linked_to == before

        # At -vvv: test_no_secret_in_verbose_output... reads it.
        result = VERBOSE_RUNS["rollback"] = rollback(verbose=3)
        assert result.returncode == 0, output(result)[-5000:]
        for h in hosts:
            assert current(h) == old[h.backend.host]
            assert environment_shown(h) == "staging"
            assert secrets_of(h, current(h)) == ("staging", SECRETS[1])
            assert get(h, HEALTH) == ("200", f"ok {os.path.basename(old[h.backend.host])}")
            status, sent, _ = site_get_encoded(h, "mysite.test", ADMIN_CSS, "br")
            assert status == "200" and sent_as_stored(h, sent, f"{current(h)}/_static/admin/css/base.css.br"), sent

        named = os.path.basename(new[hosts[0].backend.host])
        result = rollback(named)
        assert result.returncode == 0, output(result)
        for h in hosts:
            assert current(h) == new[h.backend.host]
            assert environment_shown(h) == "qa"
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    for h in hosts:
        report = reports[h.backend.host]
        assert report["failures"] == 0 and set(report["statuses"]) == {"200"}, report
        seen = set().union(*map(set, report["batches"]))
        releases = {f"ok {os.path.basename(r[h.backend.host])}" for r in (old, new)}
        assert seen == releases, (seen, releases)

    # A release that is not on the host: refused, naming the variable, nothing changed.
    live = {h.backend.host: current(h) for h in hosts}
    result = rollback("0123456789ab-01234567")
    text = output(result)
    assert result.returncode != 0, text
    assert "There is no release 0123456789ab-01234567 on" in text and "django_app_rollback_release" in text, text
    assert os.path.basename(old[hosts[0].backend.host]) in text, text
    assert_recap(result, changed=0)
    for h in hosts:
        assert current(h) == live[h.backend.host]


RESTORE_DB = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ""), "playbooks", "restore-db.yml")


def notes(host) -> list[str]:
    return backup_contents(host, f"{ROOT}/shared/data/db.sqlite3")[1]


def test_restore_db_puts_a_backup_back_with_the_release_it_belongs_to():
    """The backup taken before the failed migration holds the database the release live then
    (named in the backup) used, with the note written before v2. With that note deleted since
    and another release live, restore-db.yml switches back to the backup's release and puts
    the backup back: the note is there again, the site kept answering, and the database as it
    was just before the restore (without the note) is a backup too. A name that is no backup
    is refused."""
    hosts = molecule_hosts()
    chosen = {}
    for h in hosts:
        name = h.check_output(f"ls -t {BACKUPS} | grep -v before-restore | grep '\\.sqlite3$' | head -1")
        found = re.fullmatch(r"\d{8}T\d{6}Z-([0-9a-f]{12}-[0-9a-f]{8})-before-[0-9a-f-]+\.sqlite3", name)
        assert found, name
        chosen[h.backend.host] = (name, f"{ROOT}/releases/{found.group(1)}")
        assert "kept across releases" in backup_contents(h, f"{BACKUPS}/{name}")[1]
        # The change since: the note deleted (the live code, v1's, cannot write v2's table).
        manage(h, "shell", "-c", '"from notes.models import Note; Note.objects.filter(text=\'kept across releases\').delete()"')
        assert "kept across releases" not in notes(h)
        # The test before left another release live (the same code with other settings).
        assert current(h) != chosen[h.backend.host][1]
        start_request_loop(h, "mysite.test", path=HEALTH, port=443, tls=True, batch=20, pause=0.5)
    try:
        # One host here: the name is its backup's.
        backup = chosen[hosts[0].backend.host][0]
        result = run_playbook(RESTORE_DB, extra_vars=STACK | {"backup": backup})
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    assert result.returncode == 0, output(result)
    for h in hosts:
        name, release = chosen[h.backend.host]
        assert current(h) == release
        assert environment_shown(h) == "staging"
        assert "kept across releases" in notes(h)
        report = reports[h.backend.host]
        assert report["failures"] == 0 and set(report["statuses"]) == {"200"}, report
        # Nothing lost: the database as it was just before the restore.
        before_restore = h.check_output(f"ls -t {BACKUPS}/*-before-restore.sqlite3 | head -1")
        assert (h.file(before_restore).user, h.file(before_restore).mode) == ("root", 0o600)
        assert "kept across releases" not in backup_contents(h, before_restore)[1]
    result = run_playbook(RESTORE_DB, extra_vars=STACK | {"backup": "../data/db.sqlite3"})
    text = output(result)
    assert result.returncode != 0, text
    assert "django_app_restore_backup (-e backup=...) must name a backup file" in text, text
    assert_recap(result, changed=0)


# The role used on its own runs the same checks as site.yml's check play (whose battery in the
# site scenario covers every input); these show it, plus one that needs the host.
BAD_INPUTS = {
    "django_app_python": ({"django_app_python": "/usr/bin/python3.99"},
                          "django_app_python /usr/bin/python3.99 is not an executable", "django_app_python"),
    "django_app_project_dir": ({"django_app_project_dir": "../app"}, 'got "../app"',
                               "django_app_project_dir must be a directory of the repository"),
    "django_app_secret_files": ({"django_app_secret_files": {"/etc/cron.d/x": "* * * * * root id", ".config_secret/ok.json": {}}},
                                'fix ["/etc/cron.d/x"].', "django_app_secret_files a mapping of paths"),
    # Refused by the role's argument spec, which names the encodings it knows.
    "django_app_static_precompress": ({"django_app_static_precompress": ["zstd"]},
                                      "must be one or more of: gzip, br. Got no match for: zstd",
                                      "value of django_app_static_precompress"),
}


@pytest.fixture(scope="module")
def refusals():
    """Every case of BAD_INPUTS in one run, an inventory alias each."""
    return refusal_battery(molecule_hosts(), BAD_INPUTS,
                           [f"{ROOT}/current/_config", f"{ROOT}/shared/wsgi", f"{ROOT}/bin", "/etc/uwsgi"], state=current)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case, refusals):
    assert case not in refusals["problems"], refusals["problems"][case]
    assert refusals["changed"] == [], refusals["output"][-3000:]


# A package index with a password, as private indexes are given (the scenario installs from
# its wheels with --no-index, so the index is never asked).
INDEX_TOKEN = "s3cret-index-token-8b1f"
PRIVATE_INDEX = {"django_app_pip_index_url": f"https://deploy:{INDEX_TOKEN}@pypi.mysite.test/simple/"}
EVERY_SECRET = [*SECRETS, GIT_TOKEN, INDEX_TOKEN]
# The -vvv runs of the tests above, by what they are: a converge, a deploy that makes a release
# from the private repository, a deploy that fails, a rollback.
VERBOSE_RUNS: dict[str, subprocess.CompletedProcess] = {}
# Every 0.2 s, the process list's lines that hold a secret (the secrets are in a file only root
# reads, so the sampler's own arguments hold none) and a count of samples.
PS_SAMPLER = ("while :; do ps -eo args | grep -F -f /root/wsgistack-secrets >> /root/wsgistack-ps.log;"
              " echo sample >> /root/wsgistack-ps.count; sleep 0.2; done")


@pytest.fixture(scope="module")
def ps_samples():
    """The process list sampled from the first test that asks for it to the end of the module."""
    hosts = molecule_hosts()
    for h in hosts:
        put_file(h, "/root/wsgistack-secrets", "\n".join(EVERY_SECRET) + "\n", mode="0600")
        h.check_output("systemctl stop wsgistack-ps 2>/dev/null; systemctl reset-failed wsgistack-ps 2>/dev/null;"
                       " rm -f /root/wsgistack-ps.log /root/wsgistack-ps.count; touch /root/wsgistack-ps.log;"
                       f" systemd-run --unit wsgistack-ps --quiet sh -c {shlex.quote(PS_SAMPLER)}")
    yield hosts
    for h in hosts:
        h.run("systemctl stop wsgistack-ps; rm -f /root/wsgistack-secrets")


def test_no_secret_in_verbose_output_processes_or_files_others_can_read(ps_samples):
    """Every secret the runs handle (SECRET_KEY, the API token, the superuser's password, a git
    token and a package index password, both in URLs) appears in none of: the -vvv output of a
    converge, a deploy that makes a release from the private repository, a deploy that fails and
    a rollback (run by the tests above); the process list, sampled every 0.2 s while they ran;
    any file user nobody can read below /srv, /etc, /var, /run, /tmp, /home and /opt."""
    assert sorted(VERBOSE_RUNS) == ["converge", "deploy", "failed deploy", "rollback"], sorted(VERBOSE_RUNS)
    for name, result in VERBOSE_RUNS.items():
        assert (result.returncode != 0) == (name == "failed deploy"), (name, output(result)[-3000:])
        text = output(result)
        # -vvv: every command the connection runs is shown.
        assert "TASK [" in text and "EXEC " in text, text[-2000:]
        shown = [secret for secret in EVERY_SECRET if secret in text]
        assert not shown, (name, shown)
    grep = piped("\n".join(EVERY_SECRET))
    for h in ps_samples:
        samples = int(h.check_output("wc -l < /root/wsgistack-ps.count"))
        assert samples > 500, f"the process list was sampled {samples} times"
        # The sampler finds what it looks for: a process with a secret in its arguments.
        h.run(f"sh -c 'sleep 1; : {INDEX_TOKEN}'")
        assert wait_for(lambda h=h: INDEX_TOKEN in h.file("/root/wsgistack-ps.log").content_string, 10)
        lines = [line for line in h.file("/root/wsgistack-ps.log").content_string.splitlines() if ": " + INDEX_TOKEN not in line]
        assert lines == [], lines[:20]
        readable = h.run(f"{grep} runuser -u nobody -- grep -rlsF -f - /srv /etc /var /run /tmp /home /opt")
        assert readable.stdout == "", readable.stdout
        # The same grep finds them where root alone (and the app's group) may read.
        assert h.run(f"{grep} grep -rlsF -f - {ROOT}/current/_config").stdout.strip() != ""


# A git server in a container of its own (sshd, user git), reached over SSH with a deploy key.
GIT_SERVER = "django_app-gitssh"


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0 or not check, (args, result.stderr)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def git_over_ssh():
    """The scenario's repository on GIT_SERVER: readable by user git over SSH with the deploy
    key only. Gives the repository URL, the deploy key and the server's known_hosts line."""
    instance = molecule_hosts()[0].backend.host
    image = docker("inspect", "--format", "{{.Config.Image}}", instance)
    docker("rm", "-f", GIT_SERVER, check=False)
    docker("run", "-d", "--name", GIT_SERVER, "--hostname", "gitssh", "--cap-add", "SYS_ADMIN", "--cgroupns", "host",
           "--security-opt", "seccomp=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
           "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp", image, "/lib/systemd/systemd")
    try:
        deadline = time.monotonic() + 60
        while docker("exec", GIT_SERVER, "systemctl", "is-system-running", check=False) not in ("running", "degraded"):
            assert time.monotonic() < deadline, "systemd did not come up in the git server"
            time.sleep(1)
        docker("exec", GIT_SERVER, "sh", "-c",
               "apt-get install -y -q --no-install-recommends openssh-server git >/dev/null"
               " && useradd -m -s /usr/bin/git-shell -p '*' git && install -d -o git -g git -m 0700 /home/git/.ssh"
               " && ssh-keygen -q -t ed25519 -N '' -C deploy -f /root/deploy && systemctl restart ssh")
        with_repo = subprocess.run(f"docker exec {instance} tar -C /srv/git -cf - mysite.git"
                                   f" | docker exec -i {GIT_SERVER} tar -C /home/git -xf -", shell=True, check=False)
        assert with_repo.returncode == 0
        docker("exec", GIT_SERVER, "sh", "-c", "cp /root/deploy.pub /home/git/.ssh/authorized_keys"
               " && chown -R git:git /home/git && chmod 0600 /home/git/.ssh/authorized_keys")
        address = docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", GIT_SERVER)
        host_key = docker("exec", GIT_SERVER, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
        yield {"repo": f"git@{address}:mysite.git", "key": docker("exec", GIT_SERVER, "cat", "/root/deploy"),
               "known_hosts": f"{address} {' '.join(host_key)}",
               "other_key": docker("exec", GIT_SERVER, "sh", "-c", "ssh-keygen -q -t ed25519 -N '' -f /tmp/other"
                                   " && cut -d' ' -f1,2 /tmp/other.pub")}
    finally:
        docker("rm", "-f", GIT_SERVER, check=False)


def ssh_inputs(server: dict, version: str, known_hosts: str | None = None) -> dict:
    source = {"type": "git", "repo": server["repo"], "version": version, "ssh_key": server["key"],
              "ssh_known_hosts": server["known_hosts"] if known_hosts is None else known_hosts}
    return {"mysite_source": source, "django_app_keep_releases": 3}


def test_git_over_ssh_with_a_deploy_key_and_a_pinned_host_key(git_over_ssh):
    """A private repository on another host over SSH: the deploy key gets the commit the version
    names; the key is on the host only while git fetches (root's alone) and never in the output.
    A host key other than the pinned one fails the fetch, saying so and naming the variables, and
    leaves the live release; a source over SSH without a pinned host key is refused before any change."""
    hosts = molecule_hosts()
    key_body = git_over_ssh["key"].splitlines()[1]
    result = deploy(ssh_inputs(git_over_ssh, "main"), verbose=True)
    text = output(result)
    assert result.returncode == 0, text
    assert key_body not in text
    for h in hosts:
        assert code_id(current(h)) == git_commit(h, "main")[:12]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body
        assert h.run("ls -d /tmp/django_app-git-* 2>/dev/null").stdout == ""
        assert h.run(f"grep -rlsF {shlex.quote(key_body)} /srv /etc /tmp /root /run").stdout == ""
    again = deploy(ssh_inputs(git_over_ssh, "main"))
    assert again.returncode == 0, output(again)
    assert_recap(again, changed=0, failed=0)
    live = {h.backend.host: current(h) for h in hosts}
    # The server shows a key other than the pinned one (a man in the middle, or a rebuilt server).
    address = git_over_ssh["known_hosts"].split()[0]
    wrong = deploy(ssh_inputs(git_over_ssh, "main", f"{address} {git_over_ssh['other_key']}"))
    text = output(wrong)
    assert wrong.returncode != 0, text
    assert "Host key verification failed" in text and "django_app_source.ssh_known_hosts" in text, text
    assert key_body not in text
    for h in hosts:
        assert current(h) == live[h.backend.host]
        assert h.run("ls -d /tmp/django_app-git-* 2>/dev/null").stdout == ""
    unpinned = deploy(ssh_inputs(git_over_ssh, "main", ""))
    text = output(unpinned)
    assert unpinned.returncode != 0, text
    assert "a host key is never trusted on first use" in text, text
    assert "TASK [Prepare the release]" not in text, text
    assert_recap(unpinned, changed=0, failed=1)


# Last: it leaves a release of its own live, which the release listings above do not expect.
def test_changed_static_file_older_than_the_last_deploy_is_served_new_and_the_old_one_kept(v2_deploy):
    """A release whose stylesheet changed but whose files are older than the previous deploy
    (a tag checked out later, an archive): its page refers to the new content under a new hashed
    name, the plain name serves the new content too, and the previous release's hashed file
    still loads (pages it rendered during the roll). Nothing stale is collected."""
    hosts = molecule_hosts()
    restyled = release_path("v2-restyled")
    if not os.path.exists(restyled):
        shutil.copytree(release_path("v2"), restyled, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        css = os.path.join(restyled, "notes", "static", "notes", "site.css")
        with open(css, "a", encoding="utf-8") as stylesheet:
            # Long enough to be compressed at deploy time: its forms must be the new content too.
            stylesheet.write("\n/* restyled */\nfooter { color: #2a9d8f; }\n" + "".join(
                f".note-{n} {{ margin: {n}px; }}\n" for n in range(12)))
        for top, directories, files in os.walk(restyled):
            for name in directories + files:
                os.utime(os.path.join(top, name), (978307200, 978307200))
    old_css = {}
    for h in hosts:
        old_css[h.backend.host] = re.search(r'href="(/static/notes/site\.[0-9a-f]{12}\.css)"', get(h, "/")[1]).group(1)
    result = deploy({"mysite_source_path": restyled})
    assert result.returncode == 0, output(result)
    for h in hosts:
        status, body = get(h, "/")
        assert status == "200", body
        new_css = re.search(r'href="(/static/notes/site\.[0-9a-f]{12}\.css)"', body).group(1)
        assert new_css != old_css[h.backend.host], (new_css, body)
        live = current(h)
        for path in (new_css, "/static/notes/site.css"):
            status, stylesheet = get(h, path)
            assert status == "200" and "#2a9d8f" in stylesheet, (path, status, stylesheet)
            for encoding in ("br", "gzip"):
                status, sent, decoded = site_get_encoded(h, "mysite.test", path, encoding)
                assert status == "200" and decoded == stylesheet, (path, encoding, sent, decoded)
                form = f"{live}/_static{path.removeprefix('/static')}{'.br' if encoding == 'br' else '.gz'}"
                assert sent_as_stored(h, sent, form), (path, encoding, sent)
        status, stylesheet = get(h, old_css[h.backend.host])
        assert status == "200" and "#1d3557" in stylesheet and "#2a9d8f" not in stylesheet, stylesheet
        # The previous release's hashed file is linked in, not copied; the release's own files are root's.
        kept = h.file(f"{live}/_static{old_css[h.backend.host].removeprefix('/static')}")
        assert (kept.user, kept.mode) == ("root", 0o644), (kept.user, kept.mode)
