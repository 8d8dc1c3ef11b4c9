"""Print a digest of a requirements file, the files it includes and the other inputs of a virtualenv.

Usage: requirements_digest.py REQUIREMENTS_FILE EXTRA_TEXT
"""

import hashlib
import os
import re
import sys

INCLUDE = re.compile(r"^\s*(-r|-c|--requirement|--constraint)[\s=]+(\S+)")


def feed(digest, path, seen):
    path = os.path.realpath(path)
    if path in seen:
        return
    seen.add(path)
    with open(path, "rb") as handle:
        content = handle.read()
    digest.update(path.encode() + b"\0" + content + b"\0")
    for line in content.decode("utf-8", "replace").splitlines():
        match = INCLUDE.match(line)
        if match:
            feed(digest, os.path.join(os.path.dirname(path), match.group(2)), seen)


def main():
    requirements, extra = sys.argv[1], sys.argv[2]
    digest = hashlib.sha256(extra.encode() + b"\0" + sys.version.encode() + b"\0")
    if requirements and os.path.exists(requirements):
        # Paths are made relative to the release so that the same files in another release match.
        base = os.path.realpath(os.path.dirname(requirements))
        files = hashlib.sha256()
        seen = set()
        feed(files, requirements, seen)
        for path in sorted(seen):
            with open(path, "rb") as handle:
                digest.update(os.path.relpath(path, base).encode() + b"\0" + handle.read() + b"\0")
    print(digest.hexdigest())


main()
