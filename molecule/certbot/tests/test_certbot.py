"""Certificates really issued by an ACME server (Pebble), served by nginx, renewed with a reload."""

from __future__ import annotations

import pytest
from wsgistack_testlib import (
    assert_refused_before_change,
    curl,
    molecule_host_names,
    molecule_hosts,
    output,
    recap,
    run_playbook,
    scenario_group_vars,
    status_of,
    wait_for,
)

testinfra_hosts = molecule_host_names()

CA_ENV = "REQUESTS_CA_BUNDLE=/etc/pebble/cert.pem"


def served_chain(host, name: str) -> str:
    """The certificates nginx sends for `name`, PEM, leaf first."""
    return host.check_output(
        f"echo | openssl s_client -connect 127.0.0.1:443 -servername {name} -showcerts 2>/dev/null"
        " | sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p'"
    )


def leaf_field(host, pem_file: str, option: str) -> str:
    return host.check_output(f"openssl x509 -in {pem_file} -noout {option}")


def save_served_chain(host, name: str) -> None:
    chain = served_chain(host, name)
    host.check_output(f"cat > /tmp/served.pem <<'EOF'\n{chain}\nEOF")
    host.check_output("openssl x509 -in /tmp/served.pem -out /tmp/leaf.pem")


def pebble_root(host) -> None:
    # The issuing root changes at each Pebble start: fetch it from the management port.
    host.check_output("curl -sf --cacert /etc/pebble/cert.pem https://localhost:15000/roots/0 -o /tmp/pebble-root.pem")


def restart_pebble(host) -> None:
    """Start Pebble again. It keeps accounts in memory, so certbot's stored account is gone with
    the old process: remove it, and certbot registers a new one."""
    host.check_output("systemctl start pebble && rm -rf /etc/letsencrypt/accounts/localhost:14000")
    assert wait_for(lambda: host.run("curl -sf --cacert /etc/pebble/cert.pem https://localhost:14000/dir").rc == 0, 30)


def nginx_master(host) -> str:
    return host.check_output("systemctl show -p MainPID --value nginx").strip()


def test_served_certificate_chains_to_pebble_root(host):
    pebble_root(host)
    save_served_chain(host, "hello.test")
    verify = host.run("openssl verify -CAfile /tmp/pebble-root.pem -untrusted /tmp/served.pem /tmp/leaf.pem")
    assert verify.rc == 0 and "/tmp/leaf.pem: OK" in verify.stdout, verify.stdout + verify.stderr
    san = leaf_field(host, "/tmp/leaf.pem", "-ext subjectAltName")
    assert "DNS:hello.test" in san and "DNS:www.hello.test" in san
    assert status_of(host, "--resolve hello.test:443:127.0.0.1 --cacert /tmp/pebble-root.pem https://hello.test/") == "200"


def test_stable_paths_point_at_issued_certificate(host):
    # testinfra resolves the whole link chain: stable path -> live -> archive.
    assert host.file("/etc/ssl/certbot/hello/fullchain.pem").linked_to.startswith("/etc/letsencrypt/archive/hello/fullchain")
    key = host.file(host.file("/etc/ssl/certbot/hello/privkey.pem").linked_to)
    assert key.user == "root" and key.mode & 0o077 == 0
    assert "ASN1 OID: prime256v1" in leaf_field(host, "/etc/letsencrypt/live/hello/cert.pem", "-text")


def test_standalone_certificate_issued_and_nginx_back(host):
    pebble_root(host)
    verify = host.run("openssl verify -CAfile /tmp/pebble-root.pem -untrusted /etc/letsencrypt/live/alone/chain.pem"
                      " /etc/letsencrypt/live/alone/cert.pem")
    assert verify.rc == 0, verify.stdout + verify.stderr
    assert "DNS:alone.test" in leaf_field(host, "/etc/letsencrypt/live/alone/cert.pem", "-ext subjectAltName")
    renewal = host.file("/etc/letsencrypt/renewal/alone.conf").content_string
    assert "pre_hook = systemctl stop nginx" in renewal and "post_hook = systemctl start nginx" in renewal
    assert host.service("nginx").is_running


def test_timer_enabled_and_no_cron(host):
    assert host.service("certbot.timer").is_enabled
    assert host.service("certbot.timer").is_running
    assert not host.file("/etc/cron.d/certbot").exists
    assert "certbot" not in host.run("crontab -l").stdout
    assert "certbot" not in host.run("cat /etc/crontab").stdout


def test_forced_renewal_is_served_after_a_reload(host):
    # Renew with exactly the environment the scheduled renewals get from the unit.
    environment = host.check_output("systemctl show certbot.service -p Environment --value")
    assert CA_ENV in environment
    save_served_chain(host, "hello.test")
    old_serial = leaf_field(host, "/tmp/leaf.pem", "-serial")
    master = nginx_master(host)
    result = host.run(f"env {environment} certbot renew --force-renewal --no-random-sleep-on-renew --cert-name hello")
    assert result.rc == 0, result.stdout + result.stderr

    def new_serial():
        save_served_chain(host, "hello.test")
        serial = leaf_field(host, "/tmp/leaf.pem", "-serial")
        return serial if serial != old_serial else None

    assert wait_for(new_serial, timeout=15), "nginx still serves the old certificate"
    assert nginx_master(host) == master, "nginx was restarted instead of reloaded"


def test_unchanged_inputs_contact_nothing(host):
    """With Pebble stopped, a converge with the same inputs still passes: nothing was asked of it."""
    host.check_output("systemctl stop pebble")
    try:
        result = run_playbook("converge.yml", limit=host.backend.get_hostname())
        assert result.returncode == 0, output(result)
        assert recap(result)[host.backend.get_hostname()]["changed"] == 0, output(result)
    finally:
        restart_pebble(host)


def test_adding_a_domain_expands_the_certificate(host):
    inputs = scenario_group_vars()
    inputs["certbot_certificates"][0]["domains"].append("api.hello.test")
    inputs["nginx_uwsgi_sites"][0]["server_names"].append("api.hello.test")
    result = run_playbook("converge.yml", extra_vars=inputs, limit=host.backend.get_hostname())
    assert result.returncode == 0, output(result)
    save_served_chain(host, "api.hello.test")
    san = leaf_field(host, "/tmp/leaf.pem", "-ext subjectAltName")
    assert {"DNS:hello.test", "DNS:www.hello.test", "DNS:api.hello.test"} <= set(san.replace(",", " ").split())


def test_acme_server_down_fails_with_reason_and_keeps_certificate(host):
    save_served_chain(host, "hello.test")
    before = leaf_field(host, "/tmp/leaf.pem", "-serial")
    inputs = scenario_group_vars()
    inputs["certbot_certificates"][0]["domains"].append("new.hello.test")
    host.check_output("systemctl stop pebble")
    try:
        result = run_playbook("converge.yml", extra_vars=inputs, limit=host.backend.get_hostname())
    finally:
        restart_pebble(host)
    text = output(result)
    assert result.returncode != 0, text
    assert "Obtain certificates with certbot" in text and "Connection refused" in text, text
    save_served_chain(host, "hello.test")
    assert leaf_field(host, "/tmp/leaf.pem", "-serial") == before
    assert curl(host, "--resolve hello.test:443:127.0.0.1 https://hello.test/x") == "app:/x"


BAD_INPUTS = {
    "no email": ({"certbot_email": ""}, "certbot_email is required", "certbot_email"),
    "terms not agreed": ({"certbot_agree_tos": False}, "certbot_agree_tos must be true", "certbot_agree_tos"),
    "invalid domain": (
        {"certbot_certificates": [{"name": "bad", "domains": ["not a domain!"]}]},
        "invalid domain names: not a domain!", "certbot_certificates"),
    "webroot without path": (
        {"certbot_webroot": "", "certbot_certificates": [{"name": "w", "domains": ["w.test"]}]},
        "needs webroot_path", "certbot_certificates"),
    "standalone with port 80 taken": (
        {"certbot_web_service": "",
         "certbot_certificates": [{"name": "s", "domains": ["s.test"], "authenticator": "standalone"}]},
        "a server already listens there", "certbot_web_service"),
    "not an ACME URL": ({"certbot_acme_server": "ftp://example.test/dir"}, "must be production, staging",
                        "certbot_acme_server"),
    "unknown authenticator": (
        {"certbot_certificates": [{"name": "d", "domains": ["d.test"], "authenticator": "dns"}]},
        "authenticator", "certbot_certificates"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case):
    bad, message, variable = BAD_INPUTS[case]
    assert_refused_before_change(molecule_hosts(), bad, message, variable, ["/etc/letsencrypt", "/etc/ssl/certbot"])
