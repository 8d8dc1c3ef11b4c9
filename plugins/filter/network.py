"""Filters for the addresses hosts use between themselves."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

DOCUMENTATION = r"""
name: private_address
short_description: The address a host uses for backend and database traffic
description:
  - Given a host's variables (C(hostvars[name])), its C(wsgistack_private_address) when the
    inventory sets one, otherwise the IPv4 address of its default route from its gathered facts,
    otherwise an empty string.
  - An IP address comes back in its canonical form (C(FD00:0::5) gives C(fd00::5)), the form the host's
    facts list its addresses in.
positional: _input
options:
  _input:
    description: The host's variables.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: The web hosts' backend addresses
  ansible.builtin.debug:
    msg: "{{ groups['web'] | map('extract', hostvars) | map('wsgistack.django.private_address') | list }}"
"""

RETURN = r"""
_value:
  description: The address, or an empty string when the host has none yet.
  type: str
"""


def private_address(host_vars) -> str:
    if not isinstance(host_vars, Mapping):
        return ""
    chosen = host_vars.get("wsgistack_private_address")
    if chosen:
        # An address in its canonical form (fd00:0::5 is fd00::5), as the host's facts list it.
        try:
            return str(ipaddress.ip_address(str(chosen).strip()))
        except ValueError:
            return str(chosen)
    facts = host_vars.get("ansible_facts") or {}
    default = facts.get("default_ipv4") or host_vars.get("ansible_default_ipv4") or {}
    return str(default.get("address", "")) if isinstance(default, Mapping) else ""


class FilterModule:
    def filters(self):
        return {"private_address": private_address}
