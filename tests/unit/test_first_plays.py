"""The plays site.yml runs before any host changes (the sites and addresses, then the check play),
run for real as a user runs them at -v, against a web, a database and a balancer host (this
machine each time, through the local connection): what they show, and what they need from
each host's inventory."""

from __future__ import annotations

import re

import yaml
from conftest import ROOT

SECRETS = {"vault_secret_key": "vault-secret-key-3f9a1c7e-0123456789-0123456789-abcdefghij",
           "vault_db_password": "vault-db-password-8b2d4e6f"}

# django_app_* for every host, and the vault values they read for the web hosts only, as an
# inventory with its vault in group_vars/web has them.
INVENTORY = {"all": {
    "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "wsgistack_stack": "nginx_uwsgi", "wsgistack_tls": "self_signed", "wsgistack_private_address_public": True,
        "firewall_enabled": False, "django_app_environment_name": "staging", "django_app_name": "mysite",
        "django_app_source": {"type": "directory", "path": str(ROOT / "examples/mysite")},
        "django_app_settings_module": "mysite.settings.production", "django_app_allowed_hosts": ["mysite.test"],
        "django_app_secret_key": "{{ vault_secret_key }}",
        "django_app_database": {"engine": "postgresql", "name": "mysite", "user": "mysite", "host": "db1",
                                "password": "{{ vault_db_password }}"},
    },
    "children": {"web": {"hosts": {"web1": {}}, "vars": SECRETS}, "db": {"hosts": {"db1": {}}}, "lb": {"hosts": {"lb1": {}}}},
}}


def first_play_messages(ansible_run, tmp_path, inventory: dict, *extra: str) -> dict[str, str]:
    """site.yml's first plays on the inventory: each host's failure message, on one line."""
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    result = ansible_run("ansible-playbook", "-i", str(tmp_path / "inventory.yml"), str(ROOT / "site.yml"),
                         "--tags", "wsgistack_first_plays_only", *extra, timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text[-3000:]
    return {found.group(1): " ".join(found.group(2).split()).replace("''", "'")
            for found in re.finditer(r"^(?:fatal|failed): \[(\w+)\].*?=>(.*?)(?=^\S|\Z)", text, re.M | re.S)}


def test_checks_at_verbose_show_no_secret_and_need_none_off_the_web_hosts(ansible_run, tmp_path):
    """The vault values are the web hosts' only: the database and balancer hosts pass the first
    plays without them, and no secret shows at -v on any host (a skipped loop item shows its
    value too)."""
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    # Tagged always, the first plays run for any tag; the plays after them have none of this one.
    result = ansible_run("ansible-playbook", "-v", "-i", str(tmp_path / "inventory.yml"), str(ROOT / "site.yml"),
                         "--tags", "wsgistack_first_plays_only", timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    for host in ("web1", "db1", "lb1"):
        assert re.search(rf"^{host} +: ok=[1-9]\d* .*failed=0 ", text, re.M), text[-3000:]
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert not leaked, leaked


def test_role_inputs_site_yml_sets_itself_are_refused_with_what_to_set_instead(ansible_run, tmp_path):
    """A role input that site.yml works out itself, set in the inventory of any kind of host (or
    with -e), stops the run in the first play, on that host, naming it and what to set instead;
    nothing after the first plays runs."""
    inventory = yaml.safe_load(yaml.safe_dump(INVENTORY))
    groups = inventory["all"]["children"]
    groups["web"]["hosts"]["web1"] = {"supervisor_programs": [{"name": "mine", "command": "/bin/true"}],
                                      "nginx_uwsgi_sites": []}
    groups["db"]["hosts"]["db1"] = {"postgresql_users": [{"name": "reporting", "password": "pw"}]}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    result = ansible_run("ansible-playbook", "-i", str(tmp_path / "inventory.yml"), str(ROOT / "site.yml"),
                         "-e", '{"firewall_rules": [{"name": "metrics", "port": 9100}]}', timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    # Each host's failure: its fatal line and the result under it, one line of the message.
    messages = {found.group(1): " ".join(found.group(2).split()).replace("''", "'")
                for found in re.finditer(r"^fatal: \[(\w+)\]: FAILED! =>(.*?)(?=^fatal: |^\S|\Z)", text, re.M | re.S)}
    assert set(messages) == {"web1", "db1", "lb1"}, text[-3000:]
    assert "site.yml sets firewall_rules, nginx_uwsgi_sites, supervisor_programs itself" in messages["web1"], messages
    assert "for supervisor_programs: the sites' uWSGI programs" in messages["web1"], messages
    assert "wsgistack_firewall_rules" in messages["web1"] and "wsgistack_site_options" in messages["web1"], messages
    assert "site.yml sets firewall_rules, postgresql_users itself" in messages["db1"], messages
    assert "django_app_database (user, password)" in messages["db1"], messages
    assert "site.yml sets firewall_rules itself" in messages["lb1"], messages
    assert not re.search(r"^\w+ +: .*changed=[1-9]", text, re.M), text[-3000:]
    assert "TASK [Prepare the release]" not in text


def test_tls_ended_outside_is_refused_with_balancers(ansible_run, tmp_path):
    """wsgistack_tls: external (TLS ends at a proxy the inventory does not manage) with balancers
    in the inventory, which terminate TLS themselves: refused on the web host in the first play,
    naming the choice to make instead; nothing after the first plays runs."""
    inventory = yaml.safe_load(yaml.safe_dump(INVENTORY))
    inventory["all"]["vars"] |= {"wsgistack_tls": "external", "wsgistack_tls_proxies": ["10.0.0.5"]}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    result = ansible_run("ansible-playbook", "-i", str(tmp_path / "inventory.yml"), str(ROOT / "site.yml"),
                         "--tags", "wsgistack_first_plays_only", timeout=300)
    text = " ".join((result.stdout + result.stderr).split()).replace("''", "'")
    assert result.returncode != 0, text[-3000:]
    assert ("msg: 'wsgistack_tls: external is for web hosts without balancers: with hosts in group lb the balancers"
            " terminate TLS; set wsgistack_tls to their certificates (self_signed or certbot).'") in text, text[-3000:]
    assert ('msg: \'The balancers (group lb) terminate TLS with their own certificates: set wsgistack_tls to self_signed'
            ' or certbot for them (got "external").\'') in text, text[-3000:]
    assert "TASK [Prepare the release]" not in text


def test_tls_proxies_are_checked_and_what_site_yml_sets_behind_them_is_refused(ansible_run, tmp_path):
    """Web hosts without balancers, each with one value about the TLS proxy in front: proxies
    given without wsgistack_tls: external, a proxy network of every address, and a site option
    that would replace who may reach the site behind the proxy are refused on their host, each
    with its own message; valid proxies (an address and an IPv6 address) pass their own checks."""
    inventory = yaml.safe_load(yaml.safe_dump(INVENTORY))
    external = {"wsgistack_tls": "external", "wsgistack_tls_proxies": ["10.0.0.5"]}
    inventory["all"]["children"] = {
        "web": {"vars": SECRETS, "hosts": {
            "unused": {"wsgistack_tls_proxies": ["10.0.0.5"]},
            "everyone": external | {"wsgistack_tls_proxies": ["10.0.0.5", "::/0"]},
            "allowall": external | {"wsgistack_site_options": {"allow": [], "client_max_body_size": "20m"}},
            "good": external | {"wsgistack_tls_proxies": ["10.0.0.5", "fd00::1"]}}},
        "db": {"hosts": {"db1": {}}}}
    messages = first_play_messages(ansible_run, tmp_path, inventory)
    assert ("wsgistack_tls_proxies is read only with wsgistack_tls: external (got wsgistack_tls self_signed): remove it,"
            " or set wsgistack_tls: external.") in messages["unused"], messages
    assert 'wsgistack_tls_proxies may not hold a network of every address (got ["::/0"])' in messages["everyone"], messages
    assert ("Behind the TLS proxy (wsgistack_tls: external), site.yml sets allow of the site on the web hosts itself (who"
            " may reach it, and that its requests are HTTPS): remove them from wsgistack_site_options (or the site_options of"
            " the site).") in messages["allowall"], messages
    assert "Nothing was changed on any host: " in messages["good"], messages
    assert all("Nothing was changed" not in messages[host] for host in ("unused", "everyone", "allowall")), messages


def test_django_app_inputs_site_yml_sets_are_refused_when_they_differ_and_the_scheme_taken_from_extra_vars(
        ansible_run, tmp_path):
    """django_app inputs that site.yml works out (the app server, uWSGI from pip, the database
    socket, the check's scheme) set in the inventory to another value than site.yml's would be
    replaced: refused on their host, naming each with the value used instead and what to set.
    The same value passes, also as a string where the input is a bool. With -e, the app server
    must still match the stack, while the check's scheme given is the one used."""
    inventory = yaml.safe_load(yaml.safe_dump(INVENTORY))
    inventory["all"]["children"]["web"]["hosts"] = {
        "web1": {"django_app_server": "mod_wsgi", "django_app_database_socket_dir": "/var/run/postgresql"},
        # Behind the balancers site.yml checks over http, and nginx_uwsgi runs the distribution's uWSGI.
        "web2": {"django_app_health_check_scheme": "http", "django_app_server": "uwsgi", "django_app_uwsgi_from_pip": "false"},
        "web3": {"django_app_health_check_scheme": "https"}}
    messages = first_play_messages(ansible_run, tmp_path, inventory)
    assert ("mysite: site.yml sets django_app_server, django_app_database_socket_dir itself (\"uwsgi\", \"\" here), so the"
            ' values the inventory or -e give ("mod_wsgi", "/var/run/postgresql") would be replaced or would contradict the'
            " stack: remove them and set for django_app_server: wsgistack_stack, and a site's mode (daemon or embedded) on"
            " Apache; for django_app_database_socket_dir: nothing") in messages["web1"], messages
    assert ("mysite: site.yml sets django_app_health_check_scheme itself (\"http\" here), so the value the inventory or -e"
            ' gives ("https") would be replaced') in messages["web3"], messages
    assert set(messages) == {"web1", "web2", "web3", "db1", "lb1"}, messages
    # The others stop only because web1 and web3 did.
    assert all("Nothing was changed on any host: " in messages[host] for host in ("web2", "db1", "lb1")), messages
    inventory["all"]["children"]["web"]["hosts"] = {"web1": {}}
    messages = first_play_messages(ansible_run, tmp_path, inventory, "-e", "django_app_server=mod_wsgi",
                                   "-e", "django_app_health_check_scheme=https")
    assert "mysite: site.yml sets django_app_server itself (\"uwsgi\" here)" in messages["web1"], messages
    assert "django_app_health_check_scheme" not in messages["web1"], messages


def test_a_database_outside_the_db_group_is_verified_with_the_inventory_ca(ansible_run, tmp_path):
    """Without a db group the database is one the inventory does not manage: the CA certificate
    the inventory gives is the one the app verifies it with; with a db group it is the database
    host's (none yet before its first run)."""
    playbook = tmp_path / "show.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "web", "gather_facts": False, "vars_files": [str(ROOT / "playbooks/vars/site.yml")],
        "tasks": [{"ansible.builtin.debug": {"msg": "CA={{ django_app_database_ca_certificate }}"}}]}]))
    for groups, expected in (({"web": {"hosts": {"web1": {}}}}, "CA=my-ca"),
                             ({"web": {"hosts": {"web1": {}}}, "db": {"hosts": {"db1": {}}}}, "CA=")):
        inventory = {"all": {"vars": {"ansible_connection": "local", "django_app_database_ca_certificate": "my-ca",
                                      "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                             "children": groups}}
        (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
        result = ansible_run("ansible-playbook", "-i", str(tmp_path / "inventory.yml"), str(playbook), timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(rf"^ +msg: {expected}$", result.stdout, re.M), result.stdout
