"""The collection's filters, as roles call them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("apache_filters", ROOT / "plugins" / "filter" / "apache.py")
apache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(apache)


@pytest.mark.parametrize(("value", "enabled"), [
    ("-all +TLSv1.2 +TLSv1.3", ["TLSv1.2", "TLSv1.3"]),
    ("-ALL +tlsv1.3", ["TLSv1.3"]),
    ("TLSv1.2", ["TLSv1.2"]),
    ("all -SSLv3", ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]),
    ("all -TLSv1 -TLSv1.1", ["TLSv1.2", "TLSv1.3"]),
    # A bare name replaces what came before it, as mod_ssl reads it.
    ("+TLSv1.2 TLSv1.3", ["TLSv1.3"]),
    ("-all", []),
    ("all -SSLv2 -SSLv3 -TLSv1 -TLSv1.1", ["TLSv1.2", "TLSv1.3"]),
    ('"-all" "+TLSv1.3"', ["TLSv1.3"]),
    ("", []),
])
def test_ssl_protocols_reads_sslprotocol_as_mod_ssl_does(value, enabled):
    assert apache.ssl_protocols(value) == enabled


@pytest.mark.parametrize("value", ["+TLSv1.4", "all,-SSLv3", "TLS1.2", "+ -all", "+SSLv2"])
def test_ssl_protocols_unknown_word_is_none(value):
    assert apache.ssl_protocols(value) is None


placeholder_spec = importlib.util.spec_from_file_location("secret_tests", ROOT / "plugins" / "test" / "placeholder.py")
secret_tests = importlib.util.module_from_spec(placeholder_spec)
placeholder_spec.loader.exec_module(secret_tests)


@pytest.mark.parametrize("value", ["replace-with-64-random-characters", "changeme", "CHANGEIT", "password", "secret",
                                   "xxxx", "your-secret-here", "placeholder"])
def test_placeholder_values_are_recognised(value):
    assert secret_tests.placeholder(value)


@pytest.mark.parametrize("value", ["", "s3cret-git-token-5e2a", "molecule-only-secret", "passwords-are-long-here", 42])
def test_real_values_are_not_placeholders(value):
    assert not secret_tests.placeholder(value)


def _load(name: str, path: str):
    module_spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


network_tests = _load("network_tests", "plugins/test/network.py")
network_filters = _load("network_filters", "plugins/filter/network.py")


@pytest.mark.parametrize(("value", "private"), [
    ("10.0.0.5", True), ("172.18.0.3", True), ("192.168.1.10", True), ("100.64.1.2", True), ("fd00::5", True),
    ("93.184.215.14", False), ("8.8.8.8", False), ("2001:4860:4860::8888", False), ("127.0.0.1", False),
    ("::1", False), ("0.0.0.0", False), ("224.0.0.1", False), ("169.254.1.1", False), ("fe80::1", False),
    ("web1", False), ("10.0.0.0/8", False), (None, False),
])
def test_private_ip_is_an_address_the_internet_does_not_route(value, private):
    assert network_tests.private_ip(value) is private


@pytest.mark.parametrize(("value", "address", "network"), [
    ("10.0.0.5", True, True), ("fd00::5", True, True), ("10.0.0.0/24", False, True), ("10.0.0.5/24", False, True),
    ("2001:db8::/32", False, True), ("10.0.0.256", False, False), ("web1", False, False), ("", False, False),
    (5, False, False),
])
def test_ip_address_and_ip_network(value, address, network):
    assert (network_tests.ip_address(value), network_tests.ip_network(value)) == (address, network)


@pytest.mark.parametrize(("host_vars", "address"), [
    ({"wsgistack_private_address": "10.1.0.5", "ansible_facts": {"default_ipv4": {"address": "203.0.113.7"}}}, "10.1.0.5"),
    ({"ansible_facts": {"default_ipv4": {"address": "172.18.0.3"}}}, "172.18.0.3"),
    ({"ansible_default_ipv4": {"address": "172.18.0.4"}}, "172.18.0.4"),
    ({"wsgistack_private_address": "", "ansible_facts": {"default_ipv4": {"address": "172.18.0.3"}}}, "172.18.0.3"),
    ({}, ""),
    ("not a mapping", ""),
    # Written another way, an IPv6 address is still the one the host's facts list.
    ({"wsgistack_private_address": "FD00:0:0::5"}, "fd00::5"),
    ({"wsgistack_private_address": "web2"}, "web2"),
])
def test_private_address_prefers_the_inventory_then_the_default_route(host_vars, address):
    assert network_filters.private_address(host_vars) == address


@pytest.mark.parametrize(("address", "networks", "inside"), [
    ("172.18.0.1", ["172.18.0.1"], True), ("172.18.0.1", ["172.16.0.0/12"], True),
    ("172.18.0.1", ["192.0.2.0/24", "172.18.0.0/16"], True), ("172.18.0.1", ["192.0.2.0/24"], False),
    ("2001:db8::7", ["2001:db8::/32"], True), ("2001:db8::7", ["10.0.0.0/8"], False),
    ("10.0.0.1", [], False), ("10.0.0.1", "10.0.0.1", False), ("10.0.0.1", ["10.0.0.300"], False), ("", ["0.0.0.0/0"], False),
])
def test_in_networks(address, networks, inside):
    assert network_tests.in_networks(address, networks) is inside


@pytest.mark.parametrize(("value", "bad"), [
    ([], False), (["10.0.0.0/8", "fd00::/8", "192.0.2.7"], False), ("10.0.0.5", True), (["10.0.0.0/33"], True),
    (["web1"], True), (None, True),
])
def test_bad_networks(value, bad):
    assert network_tests.bad_networks(value) is bad


@pytest.mark.parametrize(("value", "valid"), [
    (443, True), ("443", True), ("8000-8010", True), (1, True), (65535, True), (0, False), (70000, False),
    ("8010-8000", False), ("80-", False), ("-80", False), ("http", False), (True, False), (None, False), ("1-65536", False),
])
def test_port_range(value, valid):
    assert network_tests.port_range(value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("0443", False), ("08080", False), ("\u0664\u0664\u0663", False), ("\u00b2", False), ("443-0443", False),
])
def test_port_range_refuses_what_nftables_reads_otherwise(value, valid):
    assert network_tests.port_range(value) is valid


@pytest.mark.parametrize("value", ["10.0.0.0/255.255.255.0", "10.0.0.0/0.0.0.255", "fe80::1%eth0", " 10.0.0.1"])
def test_ip_network_refuses_netmasks_and_zones(value):
    assert not network_tests.ip_network(value)


def test_in_networks_takes_an_ipv4_mapped_client_for_its_ipv4_address():
    assert network_tests.in_networks("::ffff:192.0.2.5", ["192.0.2.0/24"])


@pytest.mark.parametrize(("value", "canonical"), [
    ("10.0.0.5/24", "10.0.0.0/24"), ("10.0.0.5", "10.0.0.5"), ("10.0.0.5/32", "10.0.0.5"), ("FD00::1", "fd00::1"),
    ("fd00:9::/64", "fd00:9::/64"), ("::ffff:192.0.2.5", "192.0.2.5"), ("0.0.0.0/0", "0.0.0.0/0"), ("::/0", "::/0"),
])
def test_canonical_network_is_what_nftables_takes(value, canonical):
    assert network_filters.canonical_network(value) == canonical


sites_spec = importlib.util.spec_from_file_location("sites_filters", ROOT / "plugins" / "filter" / "sites.py")
sites = importlib.util.module_from_spec(sites_spec)
sites_spec.loader.exec_module(sites)


def test_sites_are_present_unless_they_say_absent():
    given = [{"name": "a"}, {"name": "b", "state": "absent"}, {"name": "c", "state": "present"}, "junk"]
    assert sites.sites(given) == [{"state": "present", "name": "a"}, {"name": "b", "state": "absent"},
                                  {"name": "c", "state": "present"}, "junk"]
    assert sites.absent_entries(given[:3]) == [{"name": "b", "state": "absent"}]


def test_site_databases_are_the_present_sites_postgresql_databases_once_each():
    shared = {"engine": "postgresql", "name": "shop", "user": "shop", "password": "p1"}
    given = [
        {"name": "blog", "database": {"engine": "postgresql", "name": "blog", "user": "blog", "password": "p2"}},
        {"name": "shop"},
        {"name": "files", "database": {"engine": "sqlite"}},
        {"name": "gone", "state": "absent", "database": {"engine": "postgresql", "name": "gone", "user": "g", "password": "x"}},
        {"name": "shop2"},
    ]
    assert [d["name"] for d in sites.site_databases(given, shared)] == ["blog", "shop"]
    assert sites.site_databases([{"name": "only"}], {"engine": "sqlite"}) == []


def test_pg_hba_entries_give_each_user_its_database_from_each_address_or_the_socket():
    databases = [{"name": "blog", "user": "blog"}, {"name": "shop", "user": "shop"}]
    assert sites.pg_hba_entries(databases, ["10.0.0.5", "fd00::5"]) == [
        {"type": "hostssl", "database": "blog", "user": "blog", "address": "10.0.0.5/32"},
        {"type": "hostssl", "database": "blog", "user": "blog", "address": "fd00::5/128"},
        {"type": "hostssl", "database": "shop", "user": "shop", "address": "10.0.0.5/32"},
        {"type": "hostssl", "database": "shop", "user": "shop", "address": "fd00::5/128"},
    ]
    local = sites.pg_hba_entries(databases[:1], ["10.0.0.5"], local=True)
    assert local == [{"type": "local", "database": "blog", "user": "blog"}]


def test_site_inputs_give_each_named_site_its_own_keys_over_the_inventorys():
    base = {"django_app_name": "", "django_app_source": {"type": "git"}, "django_app_processes": 2,
            "django_app_allowed_hosts": ["shared.test"]}
    given = [{"name": "blog", "processes": 4}, {"name": "shop", "allowed_hosts": ["shop.test"], "mode": "embedded"},
             "not a site", {"processes": 9}, {"name": "blog", "processes": 8}]
    assert sites.site_inputs(given, base) == {
        "blog": {"django_app_name": "blog", "django_app_source": {"type": "git"}, "django_app_processes": 4,
                 "django_app_allowed_hosts": ["shared.test"]},
        "shop": {"django_app_name": "shop", "django_app_source": {"type": "git"}, "django_app_processes": 2,
                 "django_app_allowed_hosts": ["shop.test"]},
    }
    assert sites.site_inputs("not a list", base) == {}
    assert sites.present_names(given + [{"name": "old", "state": "absent"}, {"name": 3}]) == ["blog", "shop", "blog"]
