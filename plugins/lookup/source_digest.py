"""Lookup plugin: a stable digest of a project directory on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
name: source_digest
author: wsgistack maintainers (@wsgistack)
short_description: Digest of a directory tree's names, modes and contents
description:
  - Returns the SHA-256 (hex) of every file under a directory on the controller, covering the
    relative path, executable bit, symlink target and content, walked in sorted order.
  - File times are ignored, so a fresh checkout of the same code gives the same digest.
    The django_app role uses it as the release id of a directory source.
options:
  _terms:
    description: Directories to digest.
    required: true
  exclude:
    description: Names (fnmatch patterns) skipped at any depth, files or directories.
    type: list
    elements: str
    default: [.git, __pycache__, "*.pyc", .venv, venv, node_modules, db.sqlite3, staticfiles, media]
"""

EXAMPLES = r"""
- name: Release id of a project directory
  ansible.builtin.debug:
    msg: "{{ lookup('wsgistack.django.source_digest', playbook_dir ~ '/src', exclude=['.git']) }}"
"""

RETURN = r"""
_raw:
  description: One hex digest per directory.
  type: list
  elements: str
"""

import fnmatch
import hashlib
import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


def tree_digest(root, exclude):
    digest = hashlib.sha256()

    def skipped(name):
        return any(fnmatch.fnmatch(name, pattern) for pattern in exclude)

    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not skipped(d))
        rel_dir = os.path.relpath(directory, root)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(directory, d))]):
            if skipped(name):
                continue
            path = os.path.join(directory, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            digest.update(rel.encode() + b"\0")
            if os.path.islink(path):
                digest.update(b"L" + os.readlink(path).encode() + b"\0")
                continue
            digest.update(b"X" if os.access(path, os.X_OK) else b"F")
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 16), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        exclude = self.get_option("exclude")
        results = []
        for term in terms:
            if not os.path.isdir(term):
                raise AnsibleLookupError(f"source_digest: {term} is not a directory on the controller")
            results.append(tree_digest(term, exclude))
        return results
