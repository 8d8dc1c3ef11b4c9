"""tests/images/wsgistack_zipcache.py: code imported from a zip is compiled once, then reused
from the cache by any other zip with the same file (as each Ansible task's payload is)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import ROOT

SCRIPT = """
import sys, zipimport
sys.path.insert(0, {images!r})
import wsgistack_zipcache
wsgistack_zipcache._DIR = {cache!r} + "/"
compiled = []
original = wsgistack_zipcache._compile
wsgistack_zipcache._compile = lambda path, source: compiled.append(path) or original(path, source)
sys.path.insert(0, {payload!r})
import pkg.mod
print(pkg.mod.ANSWER, len(compiled))
"""


def payload(path, answer: int) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg/__init__.py", "")
        archive.writestr("pkg/mod.py", f"ANSWER = {answer}\n")
    return str(path)


def run(tmp_path, zip_path: str) -> list[str]:
    code = SCRIPT.format(images=str(ROOT / "tests" / "images"), cache=str(tmp_path / "cache"), payload=zip_path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_second_payload_with_the_same_code_is_not_compiled_again(tmp_path):
    (tmp_path / "cache").mkdir()
    assert run(tmp_path, payload(tmp_path / "one.zip", 42)) == ["42", "2"]
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert run(tmp_path, payload(tmp_path / "two.zip", 42)) == ["42", "0"]
    # Changed source: compiled anew, never the cached code of the old one.
    assert run(tmp_path, payload(tmp_path / "three.zip", 7)) == ["7", "1"]


def test_missing_cache_directory_still_imports(tmp_path):
    answer, compiled = run(tmp_path, payload(tmp_path / "one.zip", 42))
    assert answer == "42" and int(compiled) >= 2
    assert not (tmp_path / "cache").exists()
