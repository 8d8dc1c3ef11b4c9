"""Filters for Apache inputs."""

from __future__ import annotations

DOCUMENTATION = r"""
name: ssl_protocols
short_description: The protocols an Apache SSLProtocol value enables
description:
  - Reads the value as mod_ssl does, word by word (quotes removed) and ignoring case, starting
    from no protocol - C(+name) adds a protocol, C(-name) removes it, a bare name replaces what
    came before; C(all) stands for TLSv1 to TLSv1.3, and C(-SSLv2) is skipped.
  - Returns the enabled protocols in order, or C(None) when a word is not a protocol Apache knows.
positional: _input
options:
  _input:
    description: An SSLProtocol value such as C(-all +TLSv1.2 +TLSv1.3).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse protocols older than TLS 1.2
  ansible.builtin.assert:
    that: (apache_modwsgi_tls_protocol | wsgistack.django.ssl_protocols or ['none']) | difference(['TLSv1.2', 'TLSv1.3']) == []
"""

RETURN = r"""
_value:
  description: The enabled protocols, e.g. C([TLSv1.2, TLSv1.3]); C(None) for an unknown word.
  type: list
  elements: str
"""

PROTOCOLS = ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
ALL = PROTOCOLS[1:]


def ssl_protocols(value) -> list[str] | None:
    names = {name.lower(): name for name in PROTOCOLS}
    enabled: set[str] = set()
    for word in str(value).split():
        word = word.strip("'\"")
        if not word:
            continue
        action, keyword = (word[0], word[1:]) if word[0] in "+-" else ("", word)
        keyword = keyword.lower()
        if keyword == "sslv2" and action == "-":
            # mod_ssl skips it: OpenSSL has no SSLv2 to turn off.
            continue
        if keyword == "all":
            these = set(ALL)
        elif keyword in names:
            these = {names[keyword]}
        else:
            return None
        if action == "+":
            enabled |= these
        elif action == "-":
            enabled -= these
        else:
            enabled = set(these)
    return [name for name in PROTOCOLS if name in enabled]


class FilterModule:
    def filters(self):
        return {"ssl_protocols": ssl_protocols}
