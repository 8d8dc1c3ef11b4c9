"""Mechanisms the roles share exist once, in the common role, and every role uses it."""

from __future__ import annotations

from conftest import ROOT, roles

COMMON = ROOT / "roles" / "common" / "tasks" / "platform.yml"


def test_platform_variables_are_loaded_in_one_place():
    loading = sorted(p for p in ROOT.glob("roles/*/tasks/*.yml") if "ansible.builtin.include_vars" in p.read_text())
    assert loading == [COMMON]


def test_every_role_with_platform_variables_imports_the_common_platform_tasks():
    for role in roles():
        if role.name == "common" or not any((role / "vars").glob("Debian*.yml")):
            continue
        preflight = (role / "tasks" / "preflight.yml").read_text()
        assert "name: wsgistack.django.common\n    tasks_from: platform" in preflight, role.name


# What each role keeps to itself: its private variables (__<role>_...), the files it renders,
# the runtime paths its configuration defines and the services it runs. Another role asks it
# through an entry point (tasks_from) instead. (Knowing the software is fine: certbot's renewal
# hook, which runs outside Ansible, tests the configuration of the server it reloads.)
OWNED = {
    "apache_modwsgi": ["/etc/apache2/sites-", "/etc/apache2/conf-", "/etc/apache2/mods-", "a2enmod", "a2dismod",
                       "name: apache2"],
    "nginx_uwsgi": ["/etc/nginx/sites-", "/etc/nginx/conf.d", "/etc/uwsgi", "stats.sock", "uwsgi.sock", "uwsgi_chain_reload",
                    "name: nginx\n"],
    "supervisor": ["/etc/supervisor", "supervisorctl", "name: supervisor\n"],
    "postgresql": ["/etc/postgresql", "pg_hba", "pg_ctlcluster", "name: postgresql\n"],
    "certbot": ["/etc/letsencrypt", "certbot renew", "certbot certonly"],
    "firewall": ["/etc/wsgistack/firewall", "wsgistack_firewall", "wsgistack-firewall"],
}


def role_code(role) -> dict:
    """The files a role runs or renders (not its docs or argument specs)."""
    return {path: path.read_text() for folder in ("tasks", "handlers", "templates", "defaults", "vars", "files")
            for path in sorted((role / folder).rglob("*")) if path.is_file()}


def test_no_role_reads_another_roles_files_services_or_private_variables():
    found = []
    for role in roles():
        for path, text in role_code(role).items():
            for owner, markers in OWNED.items():
                if owner == role.name:
                    continue
                for marker in [f"__{owner}_", *markers]:
                    if marker in text:
                        found.append(f"{path.relative_to(ROOT)}: {marker!r} belongs to {owner}")
    assert not found, "\n".join(found)


def include_depth(role, name: str, seen: tuple = ()) -> int:
    """How many includes (include_tasks, include_role) deep the tasks of a role's task file go;
    an import_tasks is read in place, an include_role of another role counts as one."""
    import yaml

    assert name not in seen, f"{role.name}: include cycle {seen + (name,)}"
    deepest = 0

    def walk(tasks):
        nonlocal deepest
        for task in tasks or []:
            for key in ("block", "rescue", "always"):
                walk(task.get(key))
            for action, depth in (("ansible.builtin.include_tasks", 1), ("ansible.builtin.import_tasks", 0)):
                if action in task:
                    target = task[action]["file"] if isinstance(task[action], dict) else task[action]
                    deepest = max(deepest, depth + include_depth(role, target, seen + (name,)))
            if "ansible.builtin.include_role" in task:
                deepest = max(deepest, 1)

    walk(yaml.safe_load((role / "tasks" / name).read_text()))
    return deepest


def test_django_app_reaches_every_task_within_two_includes():
    role = ROOT / "roles" / "django_app"
    depths = {path.name: include_depth(role, path.name) for path in sorted((role / "tasks").glob("*.yml"))}
    assert max(depths.values()) <= 2, {name: depth for name, depth in depths.items() if depth > 2}
    assert depths["main.yml"] == 2, depths


def test_a_site_binds_every_django_app_input_but_those_the_inventorys_choices_set():
    """playbooks/vars/app.yml gives each site every django_app input (its own key, the inventory's
    variable or the role default); the ones it leaves out are set for every site by vars/site.yml
    or the playbooks, and the check play refuses them as site keys."""
    import re

    import yaml

    spec = yaml.safe_load((ROOT / "roles/django_app/meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    bound = yaml.safe_load((ROOT / "playbooks/vars/app.yml").read_text())
    template = (ROOT / "playbooks/templates/site_problems.j2").read_text()
    fixed = re.search(r"set fixed = \[([^\]]*)\]", template).group(1)
    fixed = {"django_app_" + name for name in re.findall(r"'([a-z_]+)'", fixed)}
    assert set(bound) | fixed == set(spec) and not set(bound) & fixed
    for name, value in bound.items():
        assert value == f"{{{{ __wsgistack_app.{name} }}}}", name
    site_vars = yaml.safe_load((ROOT / "playbooks/vars/site.yml").read_text())
    assert {"django_app_server", "django_app_uwsgi_from_pip", "django_app_database_ca_certificate",
            "django_app_database_socket_dir", "django_app_health_check_scheme"} <= set(site_vars)
