"""The web hosts' sites, as the playbooks work on them."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

DOCUMENTATION = r"""
name: sites
short_description: The sites of wsgistack_sites, each with its state
description:
  - Given the list of sites of C(wsgistack_sites), the same list with C(state) set to C(present) on
    every site that does not say C(absent). Entries that are not mappings are kept as they are, for
    the check play to name.
  - C(site_databases) gives the PostgreSQL databases (C(django_app_database) mappings) of the present
    sites, the second argument standing for a site that sets none; C(pg_hba_entries) the client
    access each one's user needs, from the addresses given (or through the unix socket with C(local)).
  - C(absent_entries) gives, for each site marked C(absent), the entry that removes it from a
    role's list (sites, apps, certificates), with only its C(name) and C(state=absent).
  - C(present_names) gives the names of the sites that are served.
  - C(site_inputs) gives, for each named site, every django_app input (the keys of the mapping given
    as its argument, C(django_app_*)), that is the site's own key without the prefix, else the
    argument's value.
positional: _input
options:
  _input:
    description: The sites.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: The names of the sites that are served
  ansible.builtin.debug:
    msg: "{{ wsgistack_sites | wsgistack.django.sites | selectattr('state', 'eq', 'present') | map(attribute='name') | list }}"
"""

RETURN = r"""
_value:
  description: The sites, each with its C(state).
  type: list
  elements: dict
"""


def sites(value) -> list:
    if not isinstance(value, list):
        return value
    return [{"state": "present", **site} if isinstance(site, Mapping) else site for site in value]


def absent_entries(value) -> list:
    if not isinstance(value, list):
        return []
    return [{"name": site["name"], "state": "absent"} for site in sites(value)
            if isinstance(site, Mapping) and site["state"] == "absent" and "name" in site]


def present_names(value) -> list:
    """The names of the sites that are served (entries that are not named mappings left out)."""
    if not isinstance(value, list):
        return []
    return [site["name"] for site in sites(value)
            if isinstance(site, Mapping) and site["state"] == "present" and isinstance(site.get("name"), str)]


def site_inputs(value, base) -> dict:
    """Each named site's django_app inputs: its own keys (without the django_app_ prefix) over
    `base` (django_app's defaults and the inventory's django_app_* values)."""
    found = {}
    for site in sites(value) if isinstance(value, list) else []:
        if isinstance(site, Mapping) and isinstance(site.get("name"), str):
            found.setdefault(site["name"], {name: site.get(name.removeprefix("django_app_"), default)
                                            for name, default in base.items()} | {"django_app_name": site["name"]})
    return found


def site_databases(value, default=None) -> list:
    """The PostgreSQL databases of the present sites: each site's database, or `default` (the
    inventory's django_app_database) for a site that sets none; one entry per database name."""
    found = {}
    for site in sites(value) if isinstance(value, list) else []:
        if not isinstance(site, Mapping) or site["state"] != "present":
            continue
        database = site.get("database", default) or {}
        if isinstance(database, Mapping) and database.get("engine", "sqlite") == "postgresql":
            found.setdefault(database.get("name", ""), dict(database))
    return list(found.values())


def pg_hba_entries(databases, addresses, local=False) -> list:
    """pg_hba entries that let each database's user reach it: through the unix socket (local), or
    over TLS from each address (a /32 or /128 network)."""
    entries = []
    for database in databases:
        if local:
            entries.append({"type": "local", "database": database["name"], "user": database["user"]})
            continue
        for address in addresses:
            if not str(address).strip():
                continue
            network = str(ipaddress.ip_network(str(address), strict=False))
            entries.append({"type": "hostssl", "database": database["name"], "user": database["user"], "address": network})
    return entries


class FilterModule:
    def filters(self):
        return {"sites": sites, "absent_entries": absent_entries, "site_inputs": site_inputs, "present_names": present_names,
                "site_databases": site_databases,
                "pg_hba_entries": pg_hba_entries}
