"""Tests for network addresses in the inventory."""

from __future__ import annotations

import ipaddress
import re

DOCUMENTATION = r"""
name: ip_address
short_description: Whether a value is an IPv4 or IPv6 address
description:
  - C(ip_address) is true for one address (C(10.0.0.5), C(fd00::5)).
  - C(ip_network) is true for an address or a network in CIDR form (C(10.0.0.0/24)); host bits may be set.
  - C(private_ip) is true for an address that is not routed on the public internet (RFC 1918, unique
    local IPv6, the shared 100.64.0.0/10 range); loopback, link-local, multicast and the unspecified
    address are not.
  - C(in_networks) is true for an address inside one of the networks (or addresses) it is given.
  - C(bad_networks) is true for a value that is not a list of addresses and networks.
  - C(port_range) is true for a port (C(443)) or a range of ports (C("8000-8010")) from 1 to 65535.
positional: _input
options:
  _input:
    description: The value.
    type: raw
    required: true
  networks:
    description: For C(in_networks), the networks.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Refuse a public backend address
  ansible.builtin.assert:
    that: wsgistack_private_address is wsgistack.django.private_ip
"""

RETURN = r"""
_value:
  description: Whether the value is such an address.
  type: bool
"""

SHARED = ipaddress.ip_network("100.64.0.0/10")


def _address(value):
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def ip_address(value) -> bool:
    return _address(value) is not None


def ip_network(value) -> bool:
    # An address, or an address and a prefix length in digits (not a netmask, not a zone).
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f.:]+(/[0-9]{1,3})?", value):
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def private_ip(value) -> bool:
    address = _address(value)
    if address is None or address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local:
        return False
    return address.is_private or address in SHARED


def in_networks(value, networks) -> bool:
    address = _address(value)
    if address is None or isinstance(networks, str) or bad_networks(networks):
        return False
    # An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


def bad_networks(value) -> bool:
    return not isinstance(value, list) or not all(ip_network(network) for network in value)


def port_range(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 1 <= value <= 65535
    if not isinstance(value, str):
        return False
    # Digits without a leading zero (nftables reads 0443 as an octal number).
    if not re.fullmatch(r"[1-9][0-9]{0,4}(-[1-9][0-9]{0,4})?", value, re.ASCII):
        return False
    low, dash, high = value.partition("-")
    ports = [int(low), int(high)] if dash else [int(low)]
    return all(1 <= port <= 65535 for port in ports) and ports == sorted(ports)


class TestModule:
    def tests(self):
        return {"ip_address": ip_address, "ip_network": ip_network, "private_ip": private_ip,
                "in_networks": in_networks, "bad_networks": bad_networks, "port_range": port_range}
