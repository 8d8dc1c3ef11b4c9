"""docs/getting-started.md stays true to the code: the playbooks its commands run exist, and
the variables its inventory snippets set are inputs the roles or the playbooks take."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml
from conftest import ROOT, roles

PAGE = ROOT / "docs" / "getting-started.md"
TEXT = PAGE.read_text()
# A fenced block, with the `<!-- file: PATH -->` comment on the line before it when there is one.
BLOCKS = [(m.group("file"), m.group("lang"), m.group("body"))
          for m in re.finditer(r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", TEXT, re.S)]
SH = [body for _, lang, body in BLOCKS if lang == "sh"]
YAML = [(path, body) for path, lang, body in BLOCKS if lang == "yaml"]


def role_options() -> dict:
    """Every role's main entry point options, by name."""
    options = {}
    for role in roles():
        spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        options.update(spec["argument_specs"]["main"]["options"])
    return options


def playbook_words() -> set[str]:
    """Every identifier the playbooks (and their task files, variables and templates) mention."""
    words = set()
    for path in (ROOT / "playbooks").rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".j2"):
            words |= set(re.findall(r"\b[a-z_][a-z0-9_]*\b", path.read_text()))
    return words


def host_groups() -> set[str]:
    """The inventory groups the playbooks act on (wsgistack_<role>_hosts | default('<group>'))."""
    text = "\n".join(p.read_text() for p in (ROOT / "playbooks").rglob("*.yml"))
    return set(re.findall(r"wsgistack_[a-z]+_hosts \| default\('([a-z]+)'\)", text))


def playbook_commands() -> list[list[str]]:
    """The words of every ansible-playbook command in the page's sh blocks."""
    commands = []
    for body in SH:
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "ansible-playbook" in line:
                commands.append(shlex.split(line))
    return commands


def test_the_page_has_commands_and_inventory_snippets():
    assert len(SH) >= 10, "expected the page's commands in ```sh blocks"
    assert len(YAML) >= 4, "expected the page's inventory snippets in ```yaml blocks"
    assert len(playbook_commands()) >= 10


def test_every_yaml_block_names_its_file_and_parses():
    for path, body in YAML:
        assert path, f"a ```yaml block without <!-- file: ... --> before it:\n{body}"
        assert path.startswith("inventories/") and path.endswith(".yml"), path
        assert isinstance(yaml.safe_load(body), dict), path


@pytest.mark.parametrize("words", playbook_commands(), ids=lambda w: " ".join(w[:4]))
def test_every_playbook_the_page_runs_exists(words):
    # The project's pinned ansible, with the collection link make setup made (section 1).
    assert words[0] == ".venv/bin/ansible-playbook", words
    skip = False
    playbooks = []
    for word in words[1:]:
        if skip:
            skip = False
            continue
        if word in ("-e", "--extra-vars", "-i", "--inventory", "--vault-password-file", "--limit", "-l", "--tags", "-t"):
            skip = True
            continue
        if word.endswith(".yml"):
            playbooks.append(word)
    assert len(playbooks) == 1, words
    assert (ROOT / playbooks[0]).is_file(), f"{playbooks[0]} does not exist"


def test_every_inventory_variable_is_an_input():
    """Top-level keys of the group_vars snippets: role options or variables the playbooks use;
    keys inside a role option with suboptions are those suboptions."""
    options = role_options()
    words = playbook_words()
    checked = 0
    for path, body in YAML:
        if "/group_vars/" not in path or path.endswith("/vault.yml"):
            continue
        for key, value in yaml.safe_load(body).items():
            checked += 1
            assert key in options or key in words, f"{path}: {key} is no role option and no playbook uses it"
            suboptions = options.get(key, {}).get("options")
            if not suboptions:
                continue
            entries = value if isinstance(value, list) else [value]
            for entry in entries:
                assert set(entry) <= set(suboptions), f"{path}: {key} takes no {sorted(set(entry) - set(suboptions))}"
    assert checked >= 15


def test_hosts_snippets_use_the_playbooks_groups():
    groups = host_groups()
    assert {"web", "db"} <= groups
    found = [body for path, body in YAML if path.endswith("/hosts.yml")]
    assert found
    for body in found:
        inventory = yaml.safe_load(body)
        assert set(inventory) <= groups, set(inventory) - groups
        for group in inventory.values():
            for host_vars in (group.get("hosts") or {}).values():
                assert all(name.startswith("ansible_") for name in host_vars or {}), host_vars


def test_vault_variables_are_defined_and_used():
    """The vault snippet defines the vault_ variables the other snippets refer to, and no other;
    the inventory the page copies names the same ones in its vault.yml.example."""
    defined = set()
    used = set()
    for path, body in YAML:
        if path.endswith("/vault.yml"):
            defined |= set(yaml.safe_load(body))
        else:
            used |= set(re.findall(r"\{\{ (vault_[a-z0-9_]+) \}\}", body))
    example = yaml.safe_load((ROOT / "inventories" / "prod" / "vault.yml.example").read_text())
    assert all(name.startswith("vault_") for name in defined), defined
    assert set(example) <= defined, set(example) - defined
    # vault_redis_password is added with the workers (in prose), not in the first vault snippet.
    assert used - defined == {"vault_redis_password"}, used - defined
    assert "vault_redis_password" in TEXT


def test_the_copied_inventory_and_the_helpers_exist():
    for source in re.findall(r"cp -r (\S+) ", "\n".join(SH)):
        assert (ROOT / source).is_dir(), source
    for helper in set(re.findall(r"/srv/mysite/bin/([a-z_]+)", TEXT)):
        assert (ROOT / "roles" / "django_app" / "templates" / "bin" / f"{helper}.j2").is_file(), helper


def test_defaults_the_page_states():
    defaults = yaml.safe_load((ROOT / "roles" / "django_app" / "defaults" / "main.yml").read_text())
    assert f"default `{defaults['django_app_health_check_path']}`" in TEXT
    assert defaults["django_app_keep_releases"] == 5 and defaults["django_app_backups_keep"] == 5
    assert defaults["django_app_workers_check_seconds"] == 10
    assert [t["command"] for t in defaults["django_app_timers"]] == ["clearsessions"]


def test_backticked_role_variables_exist():
    """Every role-prefixed name the page quotes is a role option, or a name the roles or
    playbooks use (published facts such as nginx_uwsgi_supervisor_programs)."""
    options = role_options()
    prefixes = tuple(f"{role.name}_" for role in roles()) + ("wsgistack_",)
    known = playbook_words()
    for path in (ROOT / "roles").rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".j2"):
            known |= set(re.findall(r"\b[a-z_][a-z0-9_]*\b", path.read_text()))
    for name in set(re.findall(r"`([a-z][a-z0-9_]+)", TEXT)):
        if name.startswith(prefixes):
            assert name in options or name in known, name


def test_the_backup_name_in_the_restore_command_is_one_restore_db_takes():
    pattern = yaml.safe_load((ROOT / "roles" / "django_app" / "vars" / "main.yml").read_text())["__django_app_backup_pattern"]
    names = [word.removeprefix("backup=") for words in playbook_commands() for word in words if word.startswith("backup=")]
    assert names
    for name in names:
        assert re.match(pattern, name), name


def test_the_snippets_make_an_inventory(tmp_path, ansible_run):
    """Written where the page says, the snippets are an inventory Ansible reads: the server in
    the web and db groups with the page's settings."""
    for path, body in YAML:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        assert not target.exists(), f"two snippets for {path}"
        target.write_text(body)
    inventory = tmp_path / "inventories" / "mysite"
    result = ansible_run("ansible-inventory", "-i", str(inventory), "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["web"]["hosts"] == data["db"]["hosts"] == ["web1"]
    host = data["_meta"]["hostvars"]["web1"]
    assert host["wsgistack_stack"] == "nginx_uwsgi" and host["django_app_database"]["engine"] == "postgresql"


def test_every_playbook_input_is_in_the_readme_table():
    """Each wsgistack_* variable the playbooks read is a row of the README's table, and each row
    is one they read."""
    names = set()
    for path in [ROOT / "site.yml", *(ROOT / "playbooks").rglob("*.yml"), *(ROOT / "playbooks").rglob("*.j2")]:
        # Not YAML anchors (&wsgistack_x, *wsgistack_x) nor the project's own __wsgistack_ facts.
        names |= set(re.findall(r"(?<![&*_.\w])wsgistack_[a-z_]+", path.read_text()))
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Inputs of the playbooks", 1)[1]
    table = section[section.index("\n| variable"):].split("\n\n", 1)[0]
    rows = {name for line in table.splitlines() if line.startswith("| `")
            for name in re.findall(r"`(wsgistack_[a-z_]+)`", line.split(" | ")[0])}
    assert len(names) >= 15
    assert names == rows, (sorted(names - rows), sorted(rows - names))
