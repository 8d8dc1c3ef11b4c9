"""The check play's refusals of wsgistack_sites (playbooks/templates/site_problems.j2), rendered by
ansible with the playbooks' own variables (vars/site.yml, vars/app.yml) and the sites worked out
as tasks/addresses.yml does, for inventories of several hosts."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT

# The facts tasks/addresses.yml keeps (in a play of their own, as there), from the same filters and inputs.
SITES = "(wsgistack_sites if wsgistack_sites is defined else [{'name': django_app_name | default('')}]) | wsgistack.django.sites"
BASE = ("lookup('ansible.builtin.file', '" + str(ROOT / "roles/django_app/defaults/main.yml") + "') | from_yaml"
        " | combine(dict(__names | zip(query('ansible.builtin.vars', *__names))))")
FACTS = {
    "__wsgistack_sites_fact": "{{ " + SITES + " }}",
    "__wsgistack_app_base_fact": "{{ " + BASE + " }}",
    "__wsgistack_apps_fact": "{{ " + SITES + " | wsgistack.django.site_inputs(" + BASE + ") }}",
    "__wsgistack_site_default_fact": "{{ " + SITES + " | wsgistack.django.present_names | first | default('') }}",
}


def problems(ansible_run, tmp_path, inventory: dict) -> dict:
    """Each host's problems, as the check play's message joins them."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "check.yml").write_text(json.dumps([{
        "hosts": "web:db", "connection": "local", "gather_facts": False,
        "vars": {"__names": "{{ query('ansible.builtin.varnames', '^django_app_') }}"},
        "tasks": [{"ansible.builtin.set_fact": FACTS}],
    }, {
        "hosts": "web:db", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROOT / "playbooks/vars/site.yml"), str(ROOT / "playbooks/vars/app.yml")],
        "tasks": [{"ansible.builtin.copy": {
            "content": "{{ lookup('ansible.builtin.template', '" + str(ROOT / "playbooks/templates/site_problems.j2") + "') }}",
            "dest": str(out) + "/{{ inventory_hostname }}.yml"}}],
    }]))
    result = ansible_run("ansible-playbook", "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "check.yml"), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return {path.stem: " ".join(yaml.safe_load(path.read_text()) or []) for path in out.iterdir()}


def inventory(web_vars: dict, hosts: dict | None = None, db: bool = False) -> dict:
    local = {"ansible_python_interpreter": "{{ ansible_playbook_python }}", "wsgistack_stack": "nginx_uwsgi",
             "wsgistack_tls": "self_signed"}
    groups = {"web": {"hosts": hosts or {"web1": {}}, "vars": local | web_vars}}
    if db:
        groups["db"] = {"hosts": {"db1": {}}, "vars": local}
    return {"all": {"children": groups}}


def site(name: str, **inputs) -> dict:
    return {"name": name, "secret_key": f"{name}-secret-key-0123456789-0123456789-0123456789", **inputs}


def pg(name: str, user: str, password: str = "pw") -> dict:
    return {"engine": "postgresql", "name": name, "user": user, "password": password, "host": "db1"}


def test_good_sites_pass(ansible_run, tmp_path):
    sites = [site("blog", allowed_hosts=["blog.test"], database=pg("blog", "blog")),
             site("shop", allowed_hosts=["shop.test"], database=pg("shop", "shop"))]
    found = problems(ansible_run, tmp_path, inventory({"wsgistack_sites": sites}, {"web1": {}, "web2": {}}, db=True))
    assert found == {"web1": "", "web2": "", "db1": ""}


# Each a web host of its own (one ansible run for all): its inventory, and what its message says.
SHARING = {
    # One user for two databases: the database play would give it the second site's password.
    "database_user": ({"wsgistack_sites": [site("blog", allowed_hosts=["blog.test"], database=pg("blog", "app", "p1")),
                                           site("shop", allowed_hosts=["shop.test"], database=pg("shop", "app", "p2"))]},
                      "needs its own database user: more than one connects as app"),
    # Host names shared through the inventory's django_app_allowed_hosts, or told apart by case only.
    "inherited_host_name": ({"django_app_allowed_hosts": ["a.example.com"], "wsgistack_sites": [site("blog"), site("shop")]},
                            "more than one answers to a.example.com"),
    "host_name_in_other_case": ({"wsgistack_sites": [site("blog", allowed_hosts=["Shop.Example.com"]),
                                                     site("shop", allowed_hosts=["shop.example.com"])]},
                                "more than one answers to shop.example.com"),
    # A secret key shared through the inventory's django_app_secret_key.
    "inherited_secret_key": ({"django_app_secret_key": "shared-secret-key-0123456789-0123456789-0123456789",
                              "wsgistack_sites": [{"name": "blog", "allowed_hosts": ["blog.test"]},
                                                  {"name": "shop", "allowed_hosts": ["shop.test"]}]},
                             "needs its own secret_key"),
    # Secret files through the inventory's django_app_secret_files: two projects with one real SECRET_KEY.
    "inherited_secret_files": ({"django_app_secret_files": {".config_secret/settings_common.json": {"django": {
                                    "secret_key": "one-real-key-for-two-projects-0123456789-0123456789"}}},
                                "wsgistack_sites": [site("blog", allowed_hosts=["blog.test"]),
                                                    site("shop", allowed_hosts=["shop.test"])]},
                               "needs its own secret_files: more than one has the same"),
    # One group through the inventory's django_app_group: each site's group reads the others' secrets.
    "inherited_group": ({"django_app_group": "www-data",
                         "wsgistack_sites": [site("blog", allowed_hosts=["blog.test"]),
                                             site("shop", allowed_hosts=["shop.test"])]},
                        "needs its own group (it reads the site's secrets and writes its data), but their groups"
                        " www-data, www-data"),
    # A daemon site in Apache's group, beside an embedded site (which runs as www-data).
    "group_of_the_embedded_site": ({"wsgistack_stack": "apache_daemon",
                                    "wsgistack_sites": [site("blog", allowed_hosts=["blog.test"], group="www-data"),
                                                        site("wiki", allowed_hosts=["wiki.test"], mode="embedded")]},
                                   "but their groups www-data, www-data name one group twice"),
    # One health check host through the inventory: a release of shop would be checked through blog.
    "inherited_health_check_host": ({"django_app_health_check_host": "blog.test",
                                     "wsgistack_sites": [site("blog", allowed_hosts=["blog.test"]),
                                                         site("shop", allowed_hosts=["shop.test"])]},
                                    "more than one has the health_check_host blog.test"),
    # A database without engine replaces django_app_database whole: it would be SQLite.
    "database_without_engine": ({"wsgistack_sites": [site("blog", allowed_hosts=["blog.test"],
                                                          database={"name": "blog", "user": "blog", "password": "pw"}),
                                                     site("shop", allowed_hosts=["shop.test"])]},
                                "blog: database replaces django_app_database whole and sets no engine"),
}
# What sites may have alike.
ALIKE = {
    # The same database and user names on two servers (e.g. a provider's defaults).
    "database_names_on_two_servers": {"wsgistack_sites": [
        site("blog", allowed_hosts=["blog.test"], database=pg("app", "app") | {"host": "pg1.example.com"}),
        site("shop", allowed_hosts=["shop.test"], database=pg("app", "app") | {"host": "pg2.example.com"})]},
}
# Values that are not a list of sites, named by their types only (they may hold secrets).
NOT_SITES = {
    "mapping": ({"blog": {"secret_key": "S3CRET-IN-A-MAPPING"}}, "(got dict)"),
    "string_entry": ([site("blog"), "S3CRET-AS-AN-ENTRY"], "(got a list of dict, str)"),
    "empty": (None, "(got NoneType)"),
    "number": (3, "(got int)"),
}


@pytest.fixture(scope="module")
def one_host_cases(ansible_run, tmp_path_factory):
    hosts = {name: web_vars for name, (web_vars, _) in SHARING.items()}
    hosts |= {f"not_sites_{name}": {"wsgistack_sites": value} for name, (value, _) in NOT_SITES.items()}
    hosts |= {f"alike_{name}": web_vars for name, web_vars in ALIKE.items()}
    first = {"wsgistack_sites": [site("blog", allowed_hosts=["blog.test"])]}
    return problems(ansible_run, tmp_path_factory.mktemp("cases"), inventory({}, {"good": first} | hosts))


@pytest.mark.parametrize("case", SHARING)
def test_sites_that_would_share_what_is_their_own_are_refused(one_host_cases, case):
    assert one_host_cases["good"] == "", one_host_cases
    assert SHARING[case][1] in one_host_cases[case], one_host_cases[case]


@pytest.mark.parametrize("case", ALIKE)
def test_sites_may_have_alike_what_is_not_theirs_alone(one_host_cases, case):
    assert one_host_cases[f"alike_{case}"] == "", one_host_cases[f"alike_{case}"]


@pytest.mark.parametrize("case", NOT_SITES)
def test_sites_that_are_not_a_list_of_sites_are_named_without_their_values(one_host_cases, case):
    found = one_host_cases[f"not_sites_{case}"]
    assert "wsgistack_sites must be a list of sites" in found and NOT_SITES[case][1] in found, found
    assert "S3CRET" not in found and "secret-key" not in found, found


def test_web_hosts_with_other_databases_than_the_first_are_refused(ansible_run, tmp_path):
    """The database host makes the first web host's databases: another web host whose sites use
    others would find none."""
    blog = site("blog", allowed_hosts=["blog.test"], database=pg("blog", "blog"))
    shop = site("shop", allowed_hosts=["shop.test"], database=pg("shop", "shop"))
    found = problems(ansible_run, tmp_path, inventory({"wsgistack_sites": [blog]},
                                                      {"web1": {}, "web2": {"wsgistack_sites": [shop]}}, db=True))
    assert found["web1"] == "" and found["db1"] == "", found
    assert "this host's sites use other PostgreSQL databases" in found["web2"], found


def test_balancers_take_the_sites_own_options(ansible_run, tmp_path):
    """A site's site_options reach the balancers' site as they reach the web hosts': a body the web
    host admits is not refused by the balancer. The balancers' own wsgistack_site_options stay
    under them."""
    out = tmp_path / "lb_sites.json"
    web = {"wsgistack_site_options": {"client_max_body_size": "20m"},
           "wsgistack_sites": [site("shop", allowed_hosts=["shop.test"],
                                    site_options={"client_max_body_size": "50m", "uwsgi_read_timeout": 120})]}
    inventory_file = tmp_path / "inventory.yml"
    found = inventory(web, {"web1": {}})
    found["all"]["children"]["lb"] = {"hosts": {"lb1": {}},
                                      "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}",
                                               "wsgistack_site_options": {"client_max_body_size": "1m", "hsts_max_age": 600}}}
    inventory_file.write_text(yaml.safe_dump(found))
    (tmp_path / "lb.yml").write_text(json.dumps([{
        "hosts": "lb", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROOT / "playbooks/vars/site.yml")],
        "tasks": [{"ansible.builtin.copy": {"content": "{{ __wsgistack_lb_sites | to_json }}", "dest": str(out)}}],
    }]))
    result = ansible_run("ansible-playbook", "-i", str(inventory_file), str(tmp_path / "lb.yml"), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    (lb_site,) = json.loads(out.read_text())
    assert lb_site["name"] == "shop" and lb_site["server_names"] == ["shop.test"], lb_site
    assert lb_site["client_max_body_size"] == "50m" and lb_site["uwsgi_read_timeout"] == 120, lb_site
    assert lb_site["hsts_max_age"] == 600, lb_site
