"""Certificates really issued by an ACME server (Pebble), served by nginx, renewed with a reload."""

from __future__ import annotations

import json

import pytest
from wsgistack_testlib import (
    assert_forced_renewal_served_after_reload,
    assert_recap,
    assert_served_certificate_from_pebble,
    assert_tls_compliant_with_pebble_root,
    curl,
    leaf_field,
    molecule_host_names,
    molecule_hosts,
    output,
    pebble_root,
    refusal_battery,
    restart_pebble,
    run_playbook,
    save_served_chain,
    scenario_group_vars,
)

testinfra_hosts = molecule_host_names()

CA_ENV = "REQUESTS_CA_BUNDLE=/etc/pebble/cert.pem"


def test_served_certificate_chains_to_pebble_root(host):
    assert_served_certificate_from_pebble(host, "hello.test", ["hello.test", "www.hello.test"])


def test_tls_meets_mozilla_intermediate_with_pebble_root_trusted(host):
    assert_tls_compliant_with_pebble_root(host, "hello.test")


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
    assert CA_ENV in host.check_output("systemctl show certbot.service -p Environment --value")
    assert_forced_renewal_served_after_reload(host, "hello", "hello.test", "nginx")


# The tests below re-converge; each runs one playbook against every instance at once.


def test_unchanged_inputs_contact_nothing():
    """With Pebble stopped, a converge with the same inputs still passes: nothing was asked of it."""
    hosts = molecule_hosts()
    for host in hosts:
        host.check_output("systemctl stop pebble")
    try:
        result = run_playbook("converge.yml")
        assert result.returncode == 0, output(result)
        assert_recap(result, changed=0, failed=0)
    finally:
        for host in hosts:
            restart_pebble(host)


def test_adding_a_domain_expands_the_certificate():
    inputs = scenario_group_vars()
    inputs["certbot_certificates"][0]["domains"].append("api.hello.test")
    inputs["nginx_uwsgi_sites"][0]["server_names"].append("api.hello.test")
    result = run_playbook("converge.yml", extra_vars=inputs)
    assert result.returncode == 0, output(result)
    for host in molecule_hosts():
        save_served_chain(host, "api.hello.test")
        san = leaf_field(host, "/tmp/leaf.pem", "-ext subjectAltName")
        assert {"DNS:hello.test", "DNS:www.hello.test", "DNS:api.hello.test"} <= set(san.replace(",", " ").split())


def test_acme_server_down_fails_with_reason_and_keeps_certificate():
    hosts = molecule_hosts()
    before = {}
    for host in hosts:
        save_served_chain(host, "hello.test")
        before[host] = leaf_field(host, "/tmp/leaf.pem", "-serial")
        host.check_output("systemctl stop pebble")
    inputs = scenario_group_vars()
    inputs["certbot_certificates"][0]["domains"].append("new.hello.test")
    try:
        result = run_playbook("converge.yml", extra_vars=inputs)
    finally:
        for host in hosts:
            restart_pebble(host)
    text = output(result)
    assert result.returncode != 0, text
    assert_recap(result, failed=1)
    assert "Obtain certificates with certbot" in text and "Connection refused" in text, text
    for host in hosts:
        save_served_chain(host, "hello.test")
        assert leaf_field(host, "/tmp/leaf.pem", "-serial") == before[host]
        assert curl(host, "--resolve hello.test:443:127.0.0.1 https://hello.test/x") == "app:/x"


def test_another_key_type_or_authenticator_reissues_the_certificate_with_it():
    """key_type rsa for the served certificate: certbot issues it again with an RSA key, and nginx
    serves that one; then the standalone authenticator: issued again with it, so that renewals use
    it too. The next run with the same inputs changes nothing."""
    inputs = scenario_group_vars()
    inputs["certbot_certificates"][0]["key_type"] = "rsa"
    result = run_playbook("converge.yml", extra_vars=inputs)
    assert result.returncode == 0, output(result)
    assert "hello (key type ecdsa -> rsa)" in output(result)
    for host in molecule_hosts():
        save_served_chain(host, "hello.test")
        assert "Public Key Algorithm: rsaEncryption" in leaf_field(host, "/tmp/leaf.pem", "-text")
        assert "key_type = rsa" in host.file("/etc/letsencrypt/renewal/hello.conf").content_string
    inputs["certbot_certificates"][0]["authenticator"] = "standalone"
    result = run_playbook("converge.yml", extra_vars=inputs)
    assert result.returncode == 0, output(result)
    assert "hello (authenticator webroot -> standalone)" in output(result)
    for host in molecule_hosts():
        assert "authenticator = standalone" in host.file("/etc/letsencrypt/renewal/hello.conf").content_string
        assert host.service("nginx").is_running
    again = run_playbook("converge.yml", extra_vars=inputs)
    assert again.returncode == 0, output(again)
    assert_recap(again, changed=0, failed=0)


def test_an_absent_certificate_with_revoke_is_revoked_at_the_acme_server():
    """A certificate issued, then marked state: absent with revoke: true: the ACME server lists it
    as revoked, its lineage and stable paths are gone, and the other sites keep theirs."""
    hosts = molecule_hosts()
    inputs = scenario_group_vars()
    inputs["certbot_certificates"].append({"name": "gone", "domains": ["gone.test"], "authenticator": "standalone"})
    result = run_playbook("converge.yml", extra_vars=inputs)
    assert result.returncode == 0, output(result)
    serials = {}
    for host in hosts:
        serial = leaf_field(host, "/etc/letsencrypt/live/gone/cert.pem", "-serial").split("=", 1)[1]
        serials[host] = f"{int(serial, 16):x}"
        assert pebble_status(host, serials[host])["Status"] == "Valid"
    inputs["certbot_certificates"][-1].update(state="absent", revoke=True)
    result = run_playbook("converge.yml", extra_vars=inputs)
    assert result.returncode == 0, output(result)
    for host in hosts:
        assert pebble_status(host, serials[host])["Status"] == "Revoked"
        for path in ("/etc/letsencrypt/renewal/gone.conf", "/etc/letsencrypt/live/gone", "/etc/ssl/certbot/gone"):
            assert not host.file(path).exists, path
        assert host.file("/etc/letsencrypt/renewal/hello.conf").exists
        assert curl(host, "--resolve hello.test:443:127.0.0.1 https://hello.test/x") == "app:/x"


def pebble_status(host, serial: str) -> dict:
    """What Pebble's management interface says of the certificate with this serial (hex)."""
    return json.loads(host.check_output(
        f"curl -sf --cacert /etc/pebble/cert.pem https://localhost:15000/cert-status-by-serial/{serial}"))


def test_moving_to_another_acme_server_replaces_the_certificate():
    """Like staging -> production: the same Pebble under another directory URL is another server."""
    hosts = molecule_hosts()
    before = {}
    for host in hosts:
        save_served_chain(host, "hello.test")
        before[host] = leaf_field(host, "/tmp/leaf.pem", "-serial")
    inputs = scenario_group_vars()
    inputs["certbot_acme_server"] = "https://127.0.0.1:14000/dir"
    # The last test that converges: the refusals below compare the hosts before and after
    # themselves, so the scenario's own server is not put back (that would be another issuance).
    result = run_playbook("converge.yml", extra_vars=inputs)
    assert result.returncode == 0, output(result)
    assert "ACME server https://localhost:14000/dir -> https://127.0.0.1:14000/dir" in output(result)
    for host in hosts:
        assert "server = https://127.0.0.1:14000/dir" in host.file("/etc/letsencrypt/renewal/hello.conf").content_string
        save_served_chain(host, "hello.test")
        assert leaf_field(host, "/tmp/leaf.pem", "-serial") != before[host]


BAD_INPUTS = {
    "no email": ({"certbot_email": ""}, "certbot_email is required (expiry and account notices go there)",
                 "certbot_email"),
    "terms not agreed": ({"certbot_agree_tos": False},
                         "certbot_agree_tos must be true: issuing means agreeing to the ACME server", "certbot_agree_tos"),
    "invalid domain": (
        {"certbot_certificates": [{"name": "bad", "domains": ["not a domain!"]}]},
        "invalid domain names: not a domain!", "certbot_certificates"),
    "webroot without path": (
        {"certbot_webroot": "", "certbot_certificates": [{"name": "w", "domains": ["w.test"]}]},
        "the webroot authenticator needs webroot_path (or certbot_webroot).", "certbot_certificates"),
    "standalone with port 80 taken": (
        {"certbot_web_service": "",
         "certbot_certificates": [{"name": "s", "domains": ["s.test"], "authenticator": "standalone"}]},
        "so certbot could not stop it. Set certbot_web_service (nginx or apache2)", "certbot_web_service"),
    "not an ACME URL": (
        {"certbot_acme_server": "ftp://example.test/dir"},
        "certbot_acme_server must be production, staging or an https:// ACME directory URL; got ftp://example.test/dir",
        "certbot_acme_server"),
    "unknown authenticator": (
        {"certbot_certificates": [{"name": "d", "domains": ["d.test"], "authenticator": "dns"}]},
        "value of authenticator must be one of: webroot, standalone, got: dns", "certbot_certificates"),
}


@pytest.fixture(scope="module")
def refusals():
    """Every case of BAD_INPUTS in one run, an inventory alias each."""
    return refusal_battery(molecule_hosts(), BAD_INPUTS, ["/etc/letsencrypt", "/etc/ssl/certbot"])


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_before_any_change(case, refusals):
    assert case not in refusals["problems"], refusals["problems"][case]
    assert refusals["changed"] == [], refusals["output"][-3000:]
