"""Role READMEs document exactly the variables of their argument specs."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, roles


def test_every_role_has_a_readme_with_a_variables_table():
    for role in roles():
        assert "<!-- BEGIN VARIABLES" in (role / "README.md").read_text(), role.name


def test_variable_tables_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "role_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
