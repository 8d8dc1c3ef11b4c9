"""A certificate issued over HTTP-01 through Apache's webroot, renewed with a graceful reload."""

from __future__ import annotations

from wsgistack_testlib import (
    assert_forced_renewal_served_after_reload,
    assert_served_certificate_from_pebble,
    assert_tls_compliant_with_pebble_root,
    molecule_host_names,
)

testinfra_hosts = molecule_host_names()


def test_served_certificate_chains_to_pebble_root(host):
    assert_served_certificate_from_pebble(host, "hello.test", ["hello.test", "www.hello.test"])


def test_tls_meets_mozilla_intermediate_with_pebble_root_trusted(host):
    assert_tls_compliant_with_pebble_root(host, "hello.test")


def test_renewal_served_after_graceful_reload(host):
    assert_forced_renewal_served_after_reload(host, "hello", "hello.test", "apache2")
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/50-reload-web-server").content_string
    assert "apache2ctl configtest" in hook and "systemctl reload apache2" in hook


def test_timer_enabled_and_no_cron(host):
    assert host.service("certbot.timer").is_enabled
    assert not host.file("/etc/cron.d/certbot").exists
