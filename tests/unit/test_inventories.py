"""Every environment's inventory parses."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

ENVIRONMENTS = sorted(p for p in (ROOT / "inventories").glob("*") if p.is_dir()) if (ROOT / "inventories").is_dir() else []


@pytest.mark.skipif(not ENVIRONMENTS, reason="no inventories yet")
@pytest.mark.parametrize("inventory", ENVIRONMENTS, ids=lambda p: p.name)
def test_inventory_parses(inventory, ansible_run):
    result = ansible_run("ansible-inventory", "-i", str(inventory), "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["_meta"]["hostvars"], f"{inventory.name} has no hosts"


def test_the_readme_sites_example_uses_only_keys_a_site_takes():
    """The worked example of wsgistack_sites in the README: every key is one a site takes (the
    check play's list: its own keys and the django_app inputs each site may set), and each
    site_options key is an option of the stack's site entries."""
    import re

    import yaml

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(# inventories/prod/group_vars/web/sites.yml\n.*?)```", readme, re.S).group(1)
    example = yaml.safe_load(block.replace("# ...", ""))
    template = (ROOT / "playbooks/templates/site_problems.j2").read_text()
    own = set(re.findall(r"'([a-z_]+)'", re.search(r"set own_keys = \[([^\]]*)\]", template).group(1)))
    fixed = set(re.findall(r"'([a-z_]+)'", re.search(r"set fixed = \[([^\]]*)\]", template).group(1)))
    defaults = yaml.safe_load((ROOT / "roles/django_app/defaults/main.yml").read_text())
    allowed = own | {name.removeprefix("django_app_") for name in defaults} - fixed
    assert len(example["wsgistack_sites"]) >= 3
    for site in example["wsgistack_sites"]:
        assert set(site) <= allowed, set(site) - allowed
    stack = example["wsgistack_stack"]
    role = "apache_modwsgi" if stack.startswith("apache") else "nginx_uwsgi"
    entry = f"{role}_sites"
    spec = yaml.safe_load((ROOT / "roles" / role / "meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"][entry]["options"]
    for site in example["wsgistack_sites"]:
        assert set(site.get("site_options", {})) <= set(options), site["name"]
