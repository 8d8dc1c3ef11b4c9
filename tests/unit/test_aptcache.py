"""tools/aptcache.py: package files are fetched once and served from the cache afterwards,
indexes by name are passed through, and nothing but archive paths is proxied."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import aptcache  # noqa: E402

DEB = b"!<arch>\n" + bytes(range(256)) * 64
BY_HASH = "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/" + hashlib.sha256(DEB).hexdigest()


class Upstream(http.server.BaseHTTPRequestHandler):
    """A package mirror on loopback that counts what it was asked for."""

    requests: list[str] = []
    release = b"Release 1\n"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        Upstream.requests.append(self.path)
        if self.path.endswith("/pool/main/h/hello/hello_1.0_amd64.deb") or "/by-hash/" in self.path:
            body, status = DEB, 200
        elif self.path.endswith("/dists/bookworm/InRelease"):
            body, status = Upstream.release, 200
        else:
            body, status = b"missing\n", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def servers(tmp_path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    Upstream.requests = []
    Upstream.release = b"Release 1\n"
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    cache = aptcache.start(tmp_path / "cache", 0, hosts=("127.0.0.1",))
    assert cache is not None
    mirror = f"http://127.0.0.1:{upstream.server_address[1]}"
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{cache.server_address[1]}"}))
    yield mirror, opener, cache, tmp_path / "cache"
    upstream.shutdown()
    cache.shutdown()


def test_package_is_fetched_once_then_served_from_the_cache(servers):
    mirror, opener, cache, root = servers
    url = f"{mirror}/debian/pool/main/h/hello/hello_1.0_amd64.deb"
    assert opener.open(url).read() == DEB
    assert opener.open(url).read() == DEB
    assert Upstream.requests.count("/debian/pool/main/h/hello/hello_1.0_amd64.deb") == 1
    assert cache.counters == {"hits": 1, "misses": 1}
    kept = root / "127.0.0.1" / "debian/pool/main/h/hello/hello_1.0_amd64.deb"
    assert kept.read_bytes() == DEB
    assert not list(kept.parent.glob(".partial-*"))


def test_cached_package_survives_the_mirror_going_away_and_honours_ranges(servers):
    mirror, opener, _, _ = servers
    url = f"{mirror}/debian/pool/main/h/hello/hello_1.0_amd64.deb"
    opener.open(url).read()
    Upstream.requests.clear()
    request = urllib.request.Request(url, headers={"Range": "bytes=100-"})
    response = opener.open(request)
    assert response.status == 206 and response.read() == DEB[100:]
    assert response.headers["Content-Range"] == f"bytes 100-{len(DEB) - 1}/{len(DEB)}"
    assert Upstream.requests == []


def test_by_hash_index_is_cached_and_release_file_passed_through(servers):
    mirror, opener, _, _ = servers
    for _ in range(2):
        assert opener.open(f"{mirror}{BY_HASH}").read() == DEB
    assert Upstream.requests.count(BY_HASH) == 1
    assert opener.open(f"{mirror}/debian/dists/bookworm/InRelease").read() == b"Release 1\n"
    Upstream.release = b"Release 2\n"
    assert opener.open(f"{mirror}/debian/dists/bookworm/InRelease").read() == b"Release 2\n"
    assert Upstream.requests.count("/debian/dists/bookworm/InRelease") == 2


def test_missing_package_is_an_error_and_is_not_kept(servers):
    mirror, opener, _, root = servers
    with pytest.raises(urllib.error.HTTPError) as error:
        opener.open(f"{mirror}/debian/pool/main/n/nope/nope_1_amd64.deb")
    assert error.value.code == 404
    assert not list(root.rglob("nope_1_amd64.deb"))


def test_only_archive_paths_of_known_mirrors_are_proxied(servers):
    mirror, opener, _, _ = servers
    for url in (f"{mirror}/admin/secret", mirror.replace("127.0.0.1", "localhost") + "/debian/pool/x/y.deb"):
        with pytest.raises(urllib.error.HTTPError) as error:
            opener.open(url)
        assert error.value.code == 403, url
    assert Upstream.requests == []


def test_by_hash_file_with_other_content_is_not_kept(servers):
    mirror, opener, _, root = servers
    wrong = "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/" + "b" * 64
    assert opener.open(f"{mirror}{wrong}").read() == DEB
    assert not list(root.rglob("b" * 64))


def test_head_then_get_on_one_connection_stay_in_step(servers):
    """A HEAD answer carries no body, so the next answer on the kept-alive connection is intact."""
    _, _, cache, _ = servers
    conn = http.client.HTTPConnection("127.0.0.1", cache.server_address[1], timeout=10)
    conn.request("HEAD", aptcache.IDENTITY_PATH)
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    conn.request("GET", aptcache.IDENTITY_PATH)
    assert conn.getresponse().read() == aptcache.IDENTITY
    conn.close()


def test_identity_answers_and_a_taken_port_is_reported(servers):
    _, _, cache, root = servers
    port = cache.server_address[1]
    assert aptcache.answers(port)
    assert aptcache.start(root, port) is None


def test_cache_paths_stay_inside_the_cache(tmp_path):
    assert aptcache.cache_file(tmp_path, "http://m/debian/pool/main/../../../etc/x.deb") is None
    assert aptcache.cache_file(tmp_path, "http://m/debian/dists/bookworm/InRelease") is None
    kept = aptcache.cache_file(tmp_path, "http://m/debian/pool/main/a/a_1_all.deb")
    assert kept == tmp_path / "m/debian/pool/main/a/a_1_all.deb"
