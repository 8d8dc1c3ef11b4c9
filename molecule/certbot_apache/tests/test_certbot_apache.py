"""A certificate issued over HTTP-01 through Apache's webroot, renewed with a graceful reload."""

from __future__ import annotations

from wsgistack_testlib import (
    leaf_field,
    molecule_host_names,
    pebble_root,
    save_served_chain,
    status_of,
    wait_for,
)

testinfra_hosts = molecule_host_names()


def apache_main_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value apache2").strip()


def test_served_certificate_chains_to_pebble_root(host):
    pebble_root(host)
    save_served_chain(host, "hello.test")
    verify = host.run("openssl verify -CAfile /tmp/pebble-root.pem -untrusted /tmp/served.pem /tmp/leaf.pem")
    assert verify.rc == 0 and "/tmp/leaf.pem: OK" in verify.stdout, verify.stdout + verify.stderr
    san = leaf_field(host, "/tmp/leaf.pem", "-ext subjectAltName")
    assert "DNS:hello.test" in san and "DNS:www.hello.test" in san
    assert status_of(host, "--resolve hello.test:443:127.0.0.1 --cacert /tmp/pebble-root.pem https://hello.test/") == "200"


def test_renewal_served_after_graceful_reload(host):
    environment = host.check_output("systemctl show certbot.service -p Environment --value")
    save_served_chain(host, "hello.test")
    old_serial = leaf_field(host, "/tmp/leaf.pem", "-serial")
    main_pid = apache_main_pid(host)
    result = host.run(f"env {environment} certbot renew --force-renewal --no-random-sleep-on-renew --cert-name hello")
    assert result.rc == 0, result.stdout + result.stderr

    def new_serial():
        save_served_chain(host, "hello.test")
        serial = leaf_field(host, "/tmp/leaf.pem", "-serial")
        return serial if serial != old_serial else None

    assert wait_for(new_serial, timeout=15), "Apache still serves the old certificate"
    assert apache_main_pid(host) == main_pid, "Apache was restarted instead of reloaded"
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/50-reload-web-server").content_string
    assert "apache2ctl configtest" in hook and "systemctl reload apache2" in hook


def test_timer_enabled_and_no_cron(host):
    assert host.service("certbot.timer").is_enabled
    assert not host.file("/etc/cron.d/certbot").exists
