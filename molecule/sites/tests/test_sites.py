"""Several sites on one host (wsgistack_sites): each its own user, processes, vhost and
certificate; one deployed or removed while the others keep serving, unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from wsgistack_testlib import (
    molecule_host_names,
    molecule_hosts,
    output,
    recap,
    run_playbook,
    scenario_group_vars,
    site_get,
    tree_checksums,
)

testinfra_hosts = molecule_host_names()

DEPLOY = str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "deploy.yml")
NAMES = {"mysite": "mysite.test", "plainsite": "plain.test", "splitsite": "split.test", "extra": "extra.test"}
# A page each site answers with 200 and a text only it has.
PAGES = {"mysite": ("/", "release 1"), "plainsite": ("/admin/login/", "Django administration"),
         "splitsite": ("/", "splitsite embedded"), "extra": ("/admin/login/", "Django administration")}


def apache(host) -> bool:
    return host.backend.host.startswith("sites-apache")


def sites_of(host) -> list[str]:
    return ["mysite", "plainsite"] + (["splitsite"] if apache(host) else [])


def get(host, site: str, path: str) -> tuple[str, str]:
    return site_get(host, NAMES[site], path)


def served_certificate(host, site: str) -> str:
    """Subject, alternative names and fingerprint of the certificate served for the site's name
    (nothing when the server completes no handshake for it)."""
    return host.run(
        f"echo | openssl s_client -connect 127.0.0.1:443 -servername {NAMES[site]} 2>/dev/null"
        " | openssl x509 -noout -subject -ext subjectAltName -fingerprint -sha256"
    ).stdout.strip()


def processes(host, site: str) -> str:
    """The pids of the site's own app server processes (uWSGI's master and workers, mod_wsgi's
    daemon processes), or of Apache's children for an embedded site."""
    if not apache(host):
        return host.check_output(f"pgrep -d, -f '^{site} uWSGI' || true")
    if site == "splitsite":
        return host.check_output("pgrep -d, -u www-data -x apache2 || true")
    return host.check_output(f"pgrep -d, -u {site} || true")


def config_files(host, site: str) -> list[str]:
    if apache(host):
        return [f"/etc/apache2/sites-available/{site}.conf", f"/etc/apache2/sites-enabled/{site}.conf",
                f"/etc/ssl/apache-modwsgi/{site}.crt"]
    return [f"/etc/nginx/sites-available/{site}.conf", f"/etc/nginx/sites-enabled/{site}.conf",
            f"/etc/uwsgi/apps/{site}.ini", f"/etc/supervisor/conf.d/uwsgi-{site}.conf",
            f"/etc/ssl/nginx-uwsgi/{site}.crt", f"/run/{site}/uwsgi.sock"]


def state(host, site: str, pids: bool = True) -> dict:
    """What another site's run must not change: its release, processes, files and configuration."""
    return {
        "current": host.check_output(f"readlink /srv/{site}/current"),
        "processes": processes(host, site) if pids else "",
        "release": tree_checksums(host, f"/srv/{site}/current/_config"),
        "wsgi": tree_checksums(host, f"/srv/{site}/shared/wsgi"),
        "config": [tree_checksums(host, path) for path in config_files(host, site)],
    }


def test_every_site_answers_over_https_with_its_own_certificate(host):
    certificates = {}
    for site in sites_of(host):
        path, text = PAGES[site]
        status, body = get(host, site, path)
        assert status == "200" and text in body, (site, status, body[:300])
        certificates[site] = served_certificate(host, site)
        assert f"CN={NAMES[site]}" in certificates[site].replace(" ", ""), certificates[site]
        assert f"DNS:{NAMES[site]}" in certificates[site], certificates[site]
    assert "DNS:www.mysite.test" in certificates["mysite"]
    assert len({c.splitlines()[-1] for c in certificates.values()}) == len(certificates)
    # A name no site has gets no site's page.
    assert site_get(host, "other.test", "/")[0] != "200"


def test_each_site_runs_as_its_own_user_in_its_own_tree(host):
    for site in ["mysite", "plainsite"]:
        users = host.check_output(f"ps -o user= -p {processes(host, site)} | sort -u").split()
        assert users == [site], (site, users)
        tree = host.file(f"/srv/{site}/shared/data")
        assert (tree.user, tree.mode & 0o007) == (site, 0), site
        env = host.file(f"/srv/{site}/current/_config/app.env")
        assert (env.user, env.group, env.mode) == ("root", site, 0o640)
        assert host.run(f"sudo -u {'plainsite' if site == 'mysite' else 'mysite'} cat {env.path}").rc != 0
    if apache(host):
        # The embedded site runs in Apache's own processes, as Apache's user.
        assert host.file("/srv/splitsite/current/_config/app.env").group == "www-data"
        assert "WSGIDaemonProcess splitsite" not in host.file("/etc/apache2/sites-available/splitsite.conf").content_string
        for site in ["mysite", "plainsite"]:
            conf = host.file(f"/etc/apache2/sites-available/{site}.conf").content_string
            assert f"WSGIDaemonProcess {site} " in conf and f"user={site}" in conf, conf


BAD_SITES = [
    ({"sites_extra": [{"name": "mysite"}]}, "Every site of wsgistack_sites needs its own name", '["mysite"]'),
    ({"sites_extra": [{"name": "blog", "colour": "red", "allowed_hosts": ["plain.test"]}]},
     "wsgistack_sites entry blog has keys no site takes: colour", "more than one answers to plain.test"),
    ({"wsgistack_site": "nosuchsite"},
     "wsgistack_site=nosuchsite (-e wsgistack_site=<name>, which picks the site a run is about) names no site",
     "mysite, plainsite", DEPLOY),
    ({"wsgistack_site": "mysite"}, "site.yml sets up every site of the web hosts and what they share",
     "so it takes no -e wsgistack_site=mysite: release one site with playbooks/deploy.yml"),
    ({"django_app_secret_key": "one-key-for-every-site-0123456789-0123456789-0123456789"},
     "django_app_secret_key set above wsgistack_sites (with -e) would be every", "set secret_key in the"),
]


@pytest.mark.parametrize("case", BAD_SITES, ids=[
    "duplicate name", "unknown key and shared host name", "unknown -e wsgistack_site", "site.yml for one site",
    "-e over every site"])
def test_bad_sites_are_refused_before_any_host_changes(case):
    extra_vars, message, detail, playbook = (*case, "converge.yml")[:4]
    hosts = molecule_hosts()
    before = {h.backend.host: {site: state(h, site) for site in sites_of(h)} for h in hosts}
    result = run_playbook(playbook, extra_vars=extra_vars)
    text = output(result)
    assert result.returncode != 0, text
    assert message in text and detail in text, text
    assert all(c["changed"] == 0 for c in recap(result).values()), text
    for h in hosts:
        assert {site: state(h, site) for site in sites_of(h)} == before[h.backend.host]


def assert_no_site_secret(text: str) -> None:
    """A site.yml run at -v (every site's inputs pass through the check play, the release loop,
    the stack entries and the stack roles) shows none of the sites' secrets: secret keys and
    the contents of their secret files."""
    inputs = scenario_group_vars("molecule")["sites_common"] + [scenario_group_vars("apache")["sites_embedded"]]
    secrets = [site["secret_key"] for site in inputs]
    secrets += [value["django"]["secret_key"] for site in inputs for value in site.get("secret_files", {}).values()
                if "secret_key" in value["django"]]
    assert len(secrets) == 4
    assert "molecule-sites-" not in text, [line for line in text.splitlines() if "molecule-sites-" in line][:5]
    for secret in secrets:
        assert secret not in text


def test_deploying_one_site_leaves_the_others_processes_and_files_untouched():
    """playbooks/deploy.yml -e wsgistack_site=mysite with a new release of mysite: mysite serves it, and
    every other site keeps its release, its app server processes (pids) and its files; an embedded
    site's Apache processes too, since a daemon site's release restarts only its own daemons."""
    hosts = molecule_hosts()
    others = {h.backend.host: {site: state(h, site) for site in sites_of(h) if site != "mysite"} for h in hosts}
    mysite = {h.backend.host: state(h, "mysite") for h in hosts}
    release = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", "v2")
    result = run_playbook(DEPLOY, extra_vars={"wsgistack_site": "mysite", "mysite_source_path": release})
    text = output(result)
    assert result.returncode == 0, text
    for h in hosts:
        status, body = get(h, "mysite", "/")
        assert status == "200" and "release 2" in body, body[:300]
        assert state(h, "mysite")["current"] != mysite[h.backend.host]["current"]
        assert state(h, "mysite")["processes"] != mysite[h.backend.host]["processes"]
        assert {site: state(h, site) for site in sites_of(h) if site != "mysite"} == others[h.backend.host]


EXTRA_SITE = {
    "name": "extra",
    "source": {"type": "directory",
               "path": os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule/django_app/files/plainsite")},
    "requirements_file": "", "pip_packages": ["Django>=5.2,<5.3"], "settings_module": "plainsite.settings",
    "settings_generate": True, "secret_key": "molecule-sites-extra-key-1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c",
    "allowed_hosts": ["extra.test"], "check_deploy_silenced": ["security.W021"],
}


def test_a_site_added_and_another_marked_absent_in_one_run_and_the_others_never_change():
    """One site.yml run with a new site in the inventory and plainsite marked state: absent (as
    when a site moves to a new name): the new site is deployed and served beside the others;
    plainsite's vhost, app server program, socket and certificate go (its files and data stay);
    the sites that stay keep their releases and files all along, and with nginx their uWSGI
    processes too. (Apache restarts every mod_wsgi daemon when it reloads a changed
    configuration, gracefully: those sites keep answering, with new pids.) The run, at -v, shows
    no site's secret. It runs last (it is last in this file; pytest keeps the order): plainsite
    stays absent."""
    hosts = molecule_hosts()
    staying = {h.backend.host: [site for site in sites_of(h) if site != "plainsite"] for h in hosts}

    def others(h):
        return {site: state(h, site, pids=not apache(h)) for site in staying[h.backend.host]}

    before = {h.backend.host: others(h) for h in hosts}
    # As molecule.yml gives them, with its ${MOLECULE_PROJECT_DIRECTORY} filled in.
    sites_common = json.loads(os.path.expandvars(json.dumps(scenario_group_vars("molecule")["sites_common"])))
    sites_common = [site | ({"state": "absent"} if site["name"] == "plainsite" else {}) for site in sites_common]
    # mysite stays at the release the deploy test made live.
    release = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "releases", "v2")
    result = run_playbook("converge.yml", extra_vars={"sites_common": sites_common, "sites_extra": [EXTRA_SITE],
                                                      "mysite_source_path": release}, verbose=1)
    text = output(result)
    assert result.returncode == 0, text
    assert_no_site_secret(text)
    assert EXTRA_SITE["secret_key"] not in text
    for h in hosts:
        status, body = get(h, "extra", "/admin/login/")
        assert status == "200" and "Django administration" in body, body[:300]
        assert "DNS:extra.test" in served_certificate(h, "extra")
        assert h.check_output(f"ps -o user= -p {processes(h, 'extra')} | sort -u") == "extra"
        for path in config_files(h, "plainsite"):
            assert not h.file(path).exists, path
        assert processes(h, "plainsite") == "", processes(h, "plainsite")
        assert "DNS:plain.test" not in served_certificate(h, "plainsite")
        assert get(h, "plainsite", "/admin/login/")[0] != "200"
        # Nothing lost: the site's tree and data stay for the operator to remove.
        assert h.file("/srv/plainsite/current/_config/app.env").exists
        assert h.file("/srv/plainsite/shared/data").is_directory
        assert others(h) == before[h.backend.host]
        for site in staying[h.backend.host]:
            path, page = ("/", "release 2") if site == "mysite" else PAGES[site]
            status, body = get(h, site, path)
            assert status == "200" and page in body, site
