"""Every role's argument specs and defaults say the same thing."""

from __future__ import annotations

import pytest
import yaml
from conftest import roles

ROLES = roles()


def load(path):
    return yaml.safe_load(path.read_text()) or {}


def spec_options(role):
    return load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_defaults_match_argument_specs(role):
    defaults = load(role / "defaults" / "main.yml")
    options = spec_options(role)
    assert set(defaults) == set(options), (
        f"only in defaults: {sorted(set(defaults) - set(options))}; "
        f"only in argument_specs: {sorted(set(options) - set(defaults))}"
    )
    for name, option in options.items():
        assert option.get("default") == defaults[name], f"{name}: spec {option.get('default')!r} != defaults {defaults[name]!r}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_variables_carry_the_role_prefix_and_a_description(role):
    for name, option in spec_options(role).items():
        assert name.startswith(f"{role.name}_"), name
        assert option.get("description"), f"{name} has no description"
        for sub, suboption in option.get("options", {}).items():
            assert suboption.get("description"), f"{name}.{sub} has no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_nested_defaults_match_internal_defaults(role):
    """A list-of-dicts option's defaults are applied from vars/main.yml __<option>_defaults."""
    internal = load(role / "vars" / "main.yml") if (role / "vars" / "main.yml").is_file() else {}
    for name, option in spec_options(role).items():
        suboptions = option.get("options")
        key = f"__{name}_defaults"
        if not suboptions or key not in internal:
            continue
        spec_defaults = {sub: o["default"] for sub, o in suboptions.items() if "default" in o}
        # Group-like lists whose defaults are applied in templates need no internal copy.
        assert internal[key] == spec_defaults, f"{key} differs from the nested defaults of {name}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_list_options_declare_elements(role):
    for name, option in spec_options(role).items():
        if option.get("type") == "list":
            assert option.get("elements"), f"{name} is a list without elements"
