"""django_app: the environment file reads back the same in sh and in the WSGI entry; release ids
and virtualenv digests depend on content only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from test_templates import render

TRICKY = {
    "DJANGO_SECRET_KEY": "k'ey\"with $HOME `id` \\ and # spaces=" + "x" * 40,
    "API_TOKEN": "a b  c",
    "EMPTY": "",
}


def facts(tmp_path):
    return {
        "django_app_name": "mysite",
        "django_app_settings_module": "mysite.settings.production",
        "django_app_secret_key": TRICKY["DJANGO_SECRET_KEY"],
        "django_app_allowed_hosts": ["a.test", "b.test"],
        "django_app_environment": {"EMPTY": ""},
        "django_app_secret_environment": {"API_TOKEN": TRICKY["API_TOKEN"]},
        "__django_app_database": {"engine": "postgresql", "name": "db", "user": "u", "password": "p'w\"d$", "host": "h",
                                  "port": 5432, "conn_max_age": 60, "sslmode": "require"},
        "__django_app_root": str(tmp_path),
        "__django_app_config_dir": str(tmp_path),
        "__django_app_wsgi_dir": str(tmp_path),
        "__django_app_group": "mysite",
        "__django_app_user": "mysite",
    }


@pytest.fixture
def env_file(ansible_run, tmp_path):
    text = render(ansible_run, tmp_path, "django_app", "config/app.env.j2", facts(tmp_path))
    path = tmp_path / "app.env"
    path.write_text(text)
    return path


def test_environment_file_reads_the_same_in_sh(env_file):
    out = subprocess.run(["sh", "-c", f"set -a; . {env_file}; set +a; exec env -0"], capture_output=True, check=True,
                         env={"PATH": os.environ["PATH"]}).stdout.decode()
    values = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    for key, value in TRICKY.items():
        assert values[key] == value
    assert values["DJANGO_DB_PASSWORD"] == "p'w\"d$"
    assert values["DJANGO_ALLOWED_HOSTS"] == "a.test,b.test"
    assert values["DJANGO_DB_ENGINE"] == "django.db.backends.postgresql"


def test_environment_file_reads_the_same_in_the_wsgi_entry(ansible_run, tmp_path, env_file, monkeypatch):
    source = render(ansible_run, tmp_path, "django_app", "config/django_app_wsgi.py.j2", facts(tmp_path))
    namespace: dict = {}
    exec(compile(source.split("\n_load_environment()\n")[0], "django_app_wsgi.py", "exec"), namespace)
    monkeypatch.setattr(os, "environ", {})
    namespace["_load_environment"]()
    for key, value in TRICKY.items():
        assert os.environ[key] == value
    assert os.environ["DJANGO_DB_PASSWORD"] == "p'w\"d$"
    assert os.environ["DJANGO_STATIC_ROOT"] == os.path.join(str(tmp_path), "current", "_static")


@pytest.fixture(scope="module")
def tree_digest():
    sys.path.insert(0, str(ROOT / "plugins" / "lookup"))
    from source_digest import tree_digest

    return lambda path: tree_digest(str(path), [".git", "__pycache__", "*.pyc"])


def test_release_id_ignores_times_and_excluded_names_but_not_content(tmp_path, tree_digest):
    project = tmp_path / "a"
    shutil.copytree(ROOT / "examples" / "mysite", project, ignore=shutil.ignore_patterns("__pycache__"))
    first = tree_digest(project)
    copy = tmp_path / "b"
    shutil.copytree(project, copy)  # new mtimes
    os.utime(copy / "manage.py", (0, 0))
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert tree_digest(copy) == first
    (copy / "manage.py").chmod(0o644)
    assert tree_digest(copy) != first, "the executable bit is part of a release"
    (copy / "manage.py").chmod(0o755)
    (copy / "mysite" / "version.py").write_text('VERSION = "2"\n')
    assert tree_digest(copy) != first


def requirements_digest(requirements: str, extra: str = "[]") -> str:
    script = ROOT / "roles" / "django_app" / "files" / "requirements_digest.py"
    return subprocess.run([sys.executable, str(script), requirements, extra], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_virtualenv_digest_follows_included_requirements(tmp_path):
    for release in ("r1", "r2"):
        shutil.copytree(ROOT / "examples" / "mysite" / "requirements", tmp_path / release / "requirements")
    r1 = str(tmp_path / "r1" / "requirements" / "production.txt")
    r2 = str(tmp_path / "r2" / "requirements" / "production.txt")
    assert requirements_digest(r1) == requirements_digest(r2), "same files in another release: same virtualenv"
    assert requirements_digest(r1) != requirements_digest(r1, '[["psycopg[binary]"], "", "", false]')
    (tmp_path / "r2" / "requirements" / "base.txt").write_text("Django>=5.2,<5.3\nrequests\n")
    assert requirements_digest(r1) != requirements_digest(r2), "a change in an included file rebuilds"


def test_an_archive_source_is_known_by_its_checksum(ansible_run, tmp_path):
    """The code id of an archive source (the tasks django_app reads for archive sources only) is
    the archive's SHA-256, first 12 digits: the same file gives the same id, another file another."""
    ids = []
    for n, content in enumerate([b"release one", b"release one", b"release two"]):
        archive = tmp_path / f"mysite-{n}.tar.gz"
        archive.write_bytes(content)
        playbook = tmp_path / "archive.yml"
        playbook.write_text(json.dumps([{
            "hosts": "localhost", "connection": "local", "gather_facts": False,
            "vars": {"django_app_source": {"type": "archive", "path": str(archive)}},
            "tasks": [{"ansible.builtin.include_role": {"name": "wsgistack.django.django_app", "tasks_from": "source_archive"}},
                      {"ansible.builtin.debug": {"msg": "code id {{ __django_app_code_id }}"}}],
        }]))
        result = ansible_run("ansible-playbook", "-i", "localhost,", str(playbook))
        assert result.returncode == 0, result.stdout + result.stderr
        ids.append(re.search(r"msg: code id (\S+)", result.stdout).group(1))
        assert ids[-1] == hashlib.sha256(content).hexdigest()[:12], result.stdout
    assert ids[0] == ids[1] != ids[2], ids


def static_script(task_name: str) -> str:
    """A program static.yml runs as root, by the start of its task's name."""
    import yaml

    tasks = yaml.safe_load((ROOT / "roles" / "django_app" / "tasks" / "static.yml").read_text())
    task = next(task for task in tasks if task["name"].startswith(task_name))
    return task["ansible.builtin.command"]["argv"][2]


def static_link_script() -> str:
    """The program that links a new release's static files to the previous release's."""
    return static_script("Link the static files")


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="the program links root's files only")
def test_a_release_links_the_previous_releases_hashed_files_and_its_unchanged_ones(tmp_path):
    """The previous release's own hashed files (its manifest) that the new release lacks are
    linked in, in their directories; a file both hold unchanged is one file; names that leave the
    tree, files that are not root's and files the manifest does not name are left out."""
    # At other depths, as two releases' _static are: a name that climbs out of one tree would
    # land somewhere else in the other.
    old, new = tmp_path / "releases" / "old" / "_static", tmp_path / "new" / "_static"
    for top in (old, new):
        top.mkdir(mode=0o755, parents=True)
    write(old.parent / "escape.333333333333.css", "outside the previous release's files")
    write(old / "x.777777777777.css", "named through a climb only")
    write(old / "staticfiles.json", json.dumps({"version": "1.1", "paths": {
        "a.css": "a.111111111111.css", "sub/b.js": "sub/deeper/b.222222222222.js",
        "up": "../escape.333333333333.css", "abs": str(tmp_path / "abs.css"), "app.css": "app.444444444444.css",
        "gone": "gone.555555555555.css", "climb": "sub/../x.777777777777.css", "nul": "nul\u0000.css"}}))
    write(old / "a.111111111111.css", "old a")
    write(old / "sub" / "deeper" / "b.222222222222.js", "old b")
    write(tmp_path / "abs.css", "outside")
    write(old / "app.444444444444.css", "not root's")
    os.chown(old / "app.444444444444.css", 65534, 65534)
    write(old / "carried.999999999999.css", "carried from an older release, not in the manifest")
    write(old / "same.txt", "same")
    write(new / "staticfiles.json", json.dumps({"version": "1.1", "paths": {"a.css": "a.666666666666.css"}}))
    write(new / "a.666666666666.css", "new a")
    write(new / "same.txt", "same")
    result = subprocess.run([sys.executable, "-c", static_link_script(), str(new), str(old)],
                            capture_output=True, text=True, check=True)
    files = sorted(str(path.relative_to(new)) for path in new.rglob("*") if path.is_file())
    assert files == ["a.111111111111.css", "a.666666666666.css", "same.txt", "staticfiles.json",
                     "sub/deeper/b.222222222222.js"], files
    for name in ("a.111111111111.css", "sub/deeper/b.222222222222.js", "same.txt"):
        assert (new / name).stat().st_ino == (old / name).stat().st_ino, name
    assert (new / "a.666666666666.css").read_text() == "new a"
    assert oct((new / "sub" / "deeper").stat().st_mode & 0o777) == oct(0o755)
    assert result.stdout.split() == ["3"], result.stdout
    assert not (new.parent / "escape.333333333333.css").exists() and not (tmp_path / "escape.333333333333.css").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the copy is root's")
def test_the_release_copy_of_collected_files_takes_regular_files_and_directories_only(tmp_path):
    """Root's copy of what the app user collected: files and directories with their times,
    root's and readable by all; links (to a file or a directory outside), pipes are left out."""
    collected = tmp_path / "_static"
    write(collected / "css" / "site.css", "body {}")
    os.utime(collected / "css" / "site.css", (978307200, 978307200))
    (collected / "css" / "site.css").chmod(0o600)
    secret = tmp_path / "secret"
    write(secret, "root's only")
    (collected / "leak").symlink_to(secret)
    (collected / "up").symlink_to(tmp_path)
    os.mkfifo(collected / "pipe")
    collected.chmod(0o700)
    subprocess.run([sys.executable, "-c", static_script("Give the release root's copy"), str(collected)],
                   capture_output=True, text=True, check=True)
    entries = sorted(str(path.relative_to(collected)) for path in collected.rglob("*"))
    assert entries == ["css", "css/site.css"], entries
    copied = (collected / "css" / "site.css").stat()
    assert (copied.st_uid, oct(copied.st_mode & 0o777), copied.st_mtime) == (0, oct(0o644), 978307200)
    assert oct(collected.stat().st_mode & 0o777) == oct(0o755)
    assert not (tmp_path / "_static.root").exists()


@pytest.mark.parametrize(
    ("project", "collect", "wanted"),
    [
        ("", True, "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"),
        ("STORAGES = {'default': {'BACKEND': 'media.Own'}, 'staticfiles': {'BACKEND': 'static.Own'}}\n", True, "static.Own"),
        ("STATICFILES_STORAGE = 'static.Older'\n", True, None),
        ("DEFAULT_FILE_STORAGE = 'media.Older'\n", True, None),
        ("", False, None),
    ],
    ids=["startproject", "own STORAGES", "own STATICFILES_STORAGE", "own DEFAULT_FILE_STORAGE", "no collectstatic"],
)
def test_generated_settings_collect_under_hashed_names_unless_the_project_chose_a_storage(
        ansible_run, tmp_path, project, collect, wanted):
    """Manifest storage only where the project chose none (Django refuses STORAGES beside the
    older settings) and collectstatic runs (a missing manifest fails every {% static %})."""
    package = tmp_path / "plain"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("INSTALLED_APPS = ['django.contrib.staticfiles']\n" + project)
    variables = facts(tmp_path) | {"django_app_settings_module": "plain.settings", "django_app_collectstatic": collect,
                                   "__django_app_database": {"engine": "sqlite3", "name": "db.sqlite3"}}
    (tmp_path / "deploy_settings.py").write_text(
        render(ansible_run, tmp_path, "django_app", "config/deploy_settings.py.j2", variables))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path), "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "k",
           "DJANGO_ALLOWED_HOSTS": "a.test", "DJANGO_DB_ENGINE": "django.db.backends.sqlite3", "DJANGO_DB_NAME": "db",
           "DJANGO_DB_CONN_MAX_AGE": "0", "DJANGO_STATIC_URL": "/static/", "DJANGO_STATIC_ROOT": "/s",
           "DJANGO_MEDIA_URL": "/media/", "DJANGO_MEDIA_ROOT": "/m", "DJANGO_LOG_LEVEL": "INFO"}
    code = "import deploy_settings as s; print(getattr(s, 'STORAGES', {}).get('staticfiles', {}).get('BACKEND'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(wanted)
