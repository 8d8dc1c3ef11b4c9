"""site.yml for every stack (each host's wsgistack_stack): the example project over HTTPS,
code-only releases with playbooks/deploy.yml, and the production rules."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from wsgistack_testlib import (
    assert_recap,
    assert_refused_before_change,
    molecule_host_names,
    molecule_hosts,
    output,
    run_playbook,
    start_request_loop,
    stop_request_loop,
)

testinfra_hosts = molecule_host_names()

ROOT = "/srv/mysite"
DEPLOY = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "deploy.yml")
ROLLBACK = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "rollback.yml")


def stack(host) -> str:
    """The host's wsgistack_stack, from the group it is in."""
    return host.ansible.get_variables()["wsgistack_stack"]


def get(host, url: str) -> tuple[str, str]:
    result = host.run(f"curl -sk --max-time 10 --resolve mysite.test:443:127.0.0.1 -w '\\n%{{http_code}}' https://mysite.test{url}")
    body, _, status = result.stdout.rpartition("\n")
    return status, body


def headers(host, url: str) -> str:
    return host.check_output(f"curl -sk -o /dev/null -D - --resolve mysite.test:443:127.0.0.1 https://mysite.test{url}").lower()


def current(host) -> str:
    return host.check_output(f"readlink {ROOT}/current")


def test_site_answers_over_https_with_its_static_css(host):
    status, body = get(host, "/")
    assert status == "200" and "release 1" in body, body
    css = re.search(r'href="(/static/notes/site\.[0-9a-f]{12}\.css)"', body).group(1)
    status, stylesheet = get(host, css)
    assert status == "200" and "#1d3557" in stylesheet
    assert "max-age=2592000" in headers(host, css)
    page = headers(host, "/")
    assert page.count("strict-transport-security:") == 1, page
    assert ("server: nginx" if stack(host) == "nginx_uwsgi" else "server: apache") in page
    plain = host.run("curl -s -o /dev/null -w '%{http_code}' --resolve mysite.test:80:127.0.0.1 http://mysite.test/")
    assert plain.stdout == "301"


def test_admin_login_page(host):
    status, body = get(host, "/admin/login/")
    assert status == "200" and "Django administration" in body


def test_app_runs_where_the_stack_puts_it(host):
    if stack(host) == "nginx_uwsgi":
        users = host.check_output("ps -o user= -C uwsgi-core | sort -u").split()
        assert users == ["mysite"], users
    elif stack(host) == "apache_daemon":
        daemons = host.check_output("ps -eo user:20,args | grep '[(]wsgi:mysite' || true").splitlines()
        assert daemons and all(line.split()[0] == "mysite" for line in daemons), daemons
    else:
        # Embedded: the app runs inside Apache's children, as www-data, which owns its data.
        assert host.check_output("ps -eo args | grep -c '[(]wsgi:' || true").strip() == "0"
        assert host.file(f"{ROOT}/shared/data/db.sqlite3").user == "www-data"


@pytest.fixture(scope="module")
def v2_deploy():
    hosts = molecule_hosts()
    for h in hosts:
        h.check_output(f"{ROOT}/bin/manage shell -c \"from notes.models import Note; Note.objects.create(text='before v2')\"")
    before = {h.backend.host: current(h) for h in hosts}
    v2 = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", "v2")
    result = run_playbook(DEPLOY, extra_vars={"mysite_source_path": v2})
    return hosts, before, result, v2


def test_code_only_deploy_switches_to_the_new_release(v2_deploy):
    hosts, before, result, _ = v2_deploy
    text = output(result)
    assert result.returncode == 0, text
    # No package, web server or certificate work.
    assert "Install venv support" not in text
    assert not re.search(r"wsgistack\.django\.(nginx_uwsgi|apache_modwsgi|supervisor|certbot) :", text)
    for h in hosts:
        assert current(h) != before[h.backend.host]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body and "before v2" in body, body


def release_dir(variant: str) -> str:
    return os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", variant)


# Each a deploy.yml run on top of the live v2: code that cannot import, a release that fails
# its health check after the switch (checked through the web server only, so it goes live
# and back), a migration that fails, a settings module that does not import, a project WSGI
# module that does not exist, a package that does not exist. With the message each run must give.
FAILING_CHANGES = {
    "unhealthy": ({"mysite_source_path": release_dir("unhealthy"), "django_app_health_check_path": "/health/",
                   "django_app_check_before_switch": False}, "failed its check after the switch"),
    "broken": ({"mysite_source_path": release_dir("broken")}, "No module named 'notes_helpers_missing'"),
    "badmigration": ({"mysite_source_path": release_dir("badmigration")}, "Migration notes.0003_refuses of release"),
    "settings": ({"django_app_settings_module": "mysite.settings.missing"}, "No module named 'mysite.settings.missing'"),
    "wsgi": ({"django_app_wsgi_module": "mysite.no_such_wsgi"}, "No module named 'mysite.no_such_wsgi'"),
    "package": ({"django_app_pip_packages": ["wsgistack-no-such-package==1.0"]},
                "No matching distribution found for wsgistack-no-such-package==1.0"),
}


def one_host_per_stack(hosts: list) -> list:
    """A host of each stack (Debian 12 and 13 alternate), for tests whose every run goes to
    each stack but need not go to each platform as well."""
    chosen: dict = {}
    for h in hosts:
        chosen.setdefault(stack(h), h)
    return list(chosen.values())


def names_of(hosts: list) -> list[str]:
    return [h.backend.host for h in hosts]


def test_failed_changes_leave_every_stack_answering_as_before(v2_deploy):
    """A release that fails its check after the switch, bad code, a failing migration, bad
    settings, a missing WSGI module and a missing package, each deployed with deploy.yml to
    each stack at once: all the while a request loop on each host gets only the answers it
    got before (200, the live release's page), and the next good run (on every host, which
    also makes it the code-only deploy run again) changes nothing."""
    *_, v2 = v2_deploy
    hosts = one_host_per_stack(v2_deploy[0])
    limit = ",".join(names_of(hosts))
    before = {}
    for h in hosts:
        before[h.backend.host] = (current(h), get(h, "/"))
        assert before[h.backend.host][1][0] == "200", before
        start_request_loop(h, "mysite.test", port=443, tls=True, batch=10, pause=1.0)
    results = {}
    # Batches of 10 requests a second apart: the runs, not the loops, get the CPU.
    try:
        for change, (extra_vars, _) in FAILING_CHANGES.items():
            results[change] = run_playbook(DEPLOY, extra_vars={"mysite_source_path": v2} | extra_vars, limit=limit)
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    for change, result in results.items():
        text = output(result)
        assert result.returncode != 0, text
        assert FAILING_CHANGES[change][1] in text, text
        assert_recap(result, names_of(hosts), failed=1)
    for h in hosts:
        report = reports[h.backend.host]
        assert report["requests"] > 0 and report["failures"] == 0, (h.backend.host, report)
        assert set(report["statuses"]) == {"200"}, (h.backend.host, report)
        # The same page every time (the loop keeps what follows a body's last ':').
        page = before[h.backend.host][1][1]
        assert set().union(*map(set, report["batches"])) == {page.rsplit(":", 1)[-1]}, (h.backend.host, report)
        assert (current(h), get(h, "/")) == before[h.backend.host]
    # On every host: the deploy of v2 again changes nothing, after the failed changes or none.
    again = run_playbook(DEPLOY, extra_vars={"mysite_source_path": v2})
    assert again.returncode == 0, output(again)
    assert_recap(again, changed=0, failed=0)


def test_rollback_goes_back_and_forth_on_every_stack(v2_deploy):
    """rollback.yml puts v1 back live on each stack (code and configuration), then, run
    again, v2; a request loop on each host sees no failed request."""
    _, before, _, _ = v2_deploy
    hosts = one_host_per_stack(v2_deploy[0])
    limit = ",".join(names_of(hosts))
    v2 = {h.backend.host: current(h) for h in hosts}
    for h in hosts:
        start_request_loop(h, "mysite.test", port=443, tls=True, batch=20, pause=0.5)
    try:
        back = run_playbook(ROLLBACK, limit=limit)
        pages = {h.backend.host: (current(h), get(h, "/")) for h in hosts}
        forth = run_playbook(ROLLBACK, limit=limit)
    finally:
        reports = {h.backend.host: stop_request_loop(h) for h in hosts}
    assert back.returncode == 0, output(back)
    assert forth.returncode == 0, output(forth)
    for h in hosts:
        live, (status, body) = pages[h.backend.host]
        assert live == before[h.backend.host], (live, before)
        assert status == "200" and "release 1" in body and "before v2" in body, body
        assert current(h) == v2[h.backend.host]
        status, body = get(h, "/")
        assert status == "200" and "release 2" in body, body
        report = reports[h.backend.host]
        assert report["requests"] > 0 and report["failures"] == 0, (h.backend.host, report)


PROD = {"django_app_environment_name": "prod"}
PROD_CERTBOT = PROD | {"wsgistack_tls": "certbot", "certbot_acme_server": "production",
                       "certbot_email": "ops@mysite.test", "certbot_agree_tos": True}
PRODUCTION_RULES = [
    (PROD, "set wsgistack_tls: certbot", "wsgistack_tls"),
    (PROD_CERTBOT | {"certbot_acme_server": "https://acme-staging-v02.api.letsencrypt.org/directory"},
     "points at a staging server", "certbot_acme_server"),
    (PROD_CERTBOT | {"django_app_debug": True}, "django_app_debug must be false", "django_app_debug"),
    (PROD_CERTBOT | {"django_app_secret_key": "x" * 20}, "at least 50 characters", "django_app_secret_key"),
]


@pytest.mark.parametrize("case", PRODUCTION_RULES, ids=[c[2] for c in PRODUCTION_RULES])
def test_production_rule_refuses_before_any_change(case):
    bad, message, variable = case
    assert_refused_before_change(
        molecule_hosts(), bad, message, variable,
        [f"{ROOT}/current/_config", "/etc/nginx", "/etc/apache2", "/etc/ssl"], state=current,
    )
