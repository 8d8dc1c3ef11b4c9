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
