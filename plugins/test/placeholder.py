"""Tests for secret inputs."""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: placeholder
short_description: Whether a secret still holds a placeholder value
description:
  - True for the values of the inventories' C(vault.yml.example) (C(replace-with-...)) and other
    obvious placeholders such as C(changeme), C(changeit), C(password), C(secret) or C(xxx).
positional: _input
options:
  _input:
    description: The secret's value.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse a placeholder password
  ansible.builtin.assert:
    that: supervisor_inet_http_server_password is not wsgistack.django.placeholder
"""

RETURN = r"""
_value:
  description: Whether the value is a placeholder.
  type: bool
"""

PATTERN = re.compile(
    r"^(replace[-_ ]?(me|with)|change[-_ ]?(me|it)|placeholder|your[-_ ]?(secret|password)"
    r"|(password|passw0rd|secret|todo|example|x{3,})$)",
    re.IGNORECASE,
)


def placeholder(value) -> bool:
    return isinstance(value, str) and PATTERN.search(value) is not None


class TestModule:
    def tests(self):
        return {"placeholder": placeholder}
