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
