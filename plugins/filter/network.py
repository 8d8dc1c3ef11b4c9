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
  - C(canonical_network) gives an address or network in its canonical form (C(10.0.0.5/24) gives
    C(10.0.0.0/24), C(FD00::1) gives C(fd00::1), an IPv4-mapped IPv6 address its IPv4 address), as
    nftables takes it.
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


def canonical_network(value) -> str:
    network = ipaddress.ip_network(str(value).strip(), strict=False)
    if network.version == 6 and network.network_address.ipv4_mapped and network.prefixlen == 128:
        return str(network.network_address.ipv4_mapped)
    return str(network.network_address) if network.num_addresses == 1 else str(network)


class FilterModule:
    def filters(self):
        return {"private_address": private_address, "canonical_network": canonical_network}
