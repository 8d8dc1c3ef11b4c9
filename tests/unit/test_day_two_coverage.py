"""Every public variable has a day-two test or a reason in tests/day_two.yml.

A day-two test changes a variable after the first converge and shows the change on the host.
tests/day_two.yml names, for each variable of each role's argument spec (and each option of its
list entries), that test as path::function, or gives the reason no test does. A new variable
without an entry fails here; so does an entry whose test is gone or never names the variable
(in its body, the fixtures it takes, the helpers it calls or the module constants they use)."""

from __future__ import annotations

import ast
import re
from functools import cache

import pytest
import yaml
from conftest import ROOT, roles

COVERAGE = yaml.safe_load((ROOT / "tests" / "day_two.yml").read_text())["variables"]


def public_variables() -> list[str]:
    names = []
    for role in roles():
        options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
        for name, option in options.items():
            names.append(name)
            names += [f"{name}.{sub}" for sub in option.get("options", {})]
    return names


@cache
def strings_of(ref: str) -> frozenset[str]:
    """The string constants and keyword names a test reaches: its body, the module's fixtures
    it takes, the module's functions it calls and the module's constants any of these use."""
    path, _, function = ref.partition("::")
    tree = ast.parse((ROOT / path).read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    constants = {target.id: node for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}
    assert function in functions, f"{ref}: no such test"
    seen, todo, found = set(), [functions[function]], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                found.add(sub.value)
            elif isinstance(sub, ast.keyword) and sub.arg:
                found.add(sub.arg)
            elif isinstance(sub, ast.arg) and sub.arg in functions:
                todo.append(functions[sub.arg])
            elif isinstance(sub, ast.Name):
                todo += [n for n in (functions.get(sub.id), constants.get(sub.id)) if n is not None]
    return frozenset(found)


def test_every_public_variable_has_a_test_or_a_reason():
    variables = public_variables()
    assert len(variables) > 200
    assert sorted(set(variables) - set(COVERAGE)) == [], "add these to tests/day_two.yml"
    assert sorted(set(COVERAGE) - set(variables)) == [], "no longer in any argument spec"


@pytest.mark.parametrize("variable", sorted(COVERAGE))
def test_entry_names_a_test_that_names_the_variable_or_gives_a_reason(variable):
    entry = COVERAGE[variable]
    assert set(entry) in ({"test"}, {"reason"}), entry
    if "reason" in entry:
        assert len(entry["reason"].split()) >= 8, entry
        return
    path = entry["test"].partition("::")[0]
    assert re.fullmatch(r"molecule/[a-z_]+/tests/test_[a-z_]+\.py", path), entry
    leaf = variable.rpartition(".")[2]
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(leaf)}(?![A-Za-z0-9_])")
    assert any(word.search(text) for text in strings_of(entry["test"])), (
        f"{entry['test']} never names {leaf}")
