"""A caching HTTP proxy for Debian/Ubuntu package archives, shared by every test container.

Containers of the test images ask it through apt's Proxy-Auto-Detect hook (the image's
/usr/local/lib/wsgistack/apt-proxy-detect), which uses it only when it answers on the
container's default gateway, so the same images work without it. Package files (`/pool/`)
and index files addressed by their hash (`/by-hash/`) never change under one URL: they are
kept in the cache directory and served from there on later requests, across runs. Everything
else under `/dists/` (Release files, indexes by name) is passed through. Only GET/HEAD for
archive paths on the known mirror hosts, from loopback or private addresses, are served: it
is not an open proxy. A miss is streamed to the client while it is written to the cache; a
by-hash file is kept only when its content has the hash in its name.

Only the standard library is used; the harness runs it in a thread for the whole test run.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import ipaddress
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

IDENTITY_PATH = "/wsgistack-apt-cache"
IDENTITY = b"wsgistack-apt-cache\n"
PORT = 3142
# Mirror hosts of the Debian and Ubuntu images; start(..., hosts=) adds others (e.g. the
# host of WSGISTACK_DEBIAN_MIRROR).
MIRROR_HOSTS = ("deb.debian.org", "security.debian.org", "archive.ubuntu.com", "security.ubuntu.com",
                "ports.ubuntu.com")
ARCHIVE_PATH = re.compile(r"/(dists|pool)/")
IMMUTABLE_PATH = re.compile(r"(/pool/.+\.(deb|udeb|dsc|tar\.\w+|diff\.gz)$)|(/by-hash/[A-Za-z0-9]+/[0-9a-f]{32,}$)")
FORWARDED_HEADERS = ("If-Modified-Since", "If-None-Match", "Range", "If-Range", "Accept", "User-Agent")
RETURNED_HEADERS = ("Content-Type", "Last-Modified", "ETag", "Content-Range", "Accept-Ranges")
CHUNK = 1 << 16


def cache_file(root: Path, url: str) -> Path | None:
    """Where an immutable archive file is kept, or None for files that must be passed through."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not IMMUTABLE_PATH.search(parts.path):
        return None
    relative = Path(parts.hostname) / parts.path.lstrip("/")
    if ".." in relative.parts:
        return None
    return root / relative


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CacheServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if self.server.log_path:
            with open(self.server.log_path, "a") as out:
                out.write(f"{self.address_string()} {format % args}\n")

    def _refuse(self, code: int, reason: str) -> None:
        body = f"{reason}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - the base class's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the base class's naming
        client = ipaddress.ip_address(self.client_address[0])
        if not (client.is_loopback or client.is_private):
            self._refuse(403, "only local and private clients")
            return
        if self.path == IDENTITY_PATH:
            self.send_response(200)
            self.send_header("Content-Length", str(len(IDENTITY)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(IDENTITY)
            return
        parts = urllib.parse.urlsplit(self.path)
        if parts.scheme != "http" or not ARCHIVE_PATH.search(parts.path):
            self._refuse(403, "only http package archive paths (/dists/, /pool/) are proxied")
            return
        if (parts.hostname or "").lower() not in self.server.hosts:
            self._refuse(403, f"{parts.hostname} is not a known package mirror")
            return
        target = cache_file(self.server.root, self.path)
        try:
            if target is not None and target.is_file():
                self.server.count("hits")
                self._serve_file(target)
            elif target is None or self.command == "HEAD":
                self._pass_through()
            else:
                self.server.count("misses")
                self._fetch_and_keep(target)
        except (ConnectionError, TimeoutError):
            # The client went away (or stalled); nothing is kept from a partial download.
            self.close_connection = True

    def _upstream(self) -> urllib.request.Request:
        request = urllib.request.Request(self.path, method=self.command)
        for name in FORWARDED_HEADERS:
            if self.headers.get(name):
                request.add_header(name, self.headers[name])
        return request

    def _send_upstream_headers(self, status: int, headers, length: int | None) -> None:
        self.send_response(status)
        for name in RETURNED_HEADERS:
            if headers.get(name):
                self.send_header(name, headers[name])
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()

    def _pass_through(self) -> None:
        try:
            response = urllib.request.urlopen(self._upstream(), timeout=60)  # noqa: S310 - http archive URLs only
        except urllib.error.HTTPError as exc:
            response = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            self._refuse(502, f"upstream: {exc}")
            return
        with response:
            try:
                body = response.read() if self.command != "HEAD" else b""
            except (OSError, http.client.HTTPException) as exc:
                self._refuse(502, f"upstream: {exc}")
                return
            length = len(body) if self.command != "HEAD" else int(response.headers.get("Content-Length") or 0)
            self._send_upstream_headers(response.status if hasattr(response, "status") else response.code,
                                        response.headers, length)
            self.wfile.write(body)

    def _serve_file(self, path: Path) -> None:
        size = path.stat().st_size
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and 0 < int(match.group(1)) < size:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as source:
            source.seek(start)
            shutil.copyfileobj(source, self.wfile, CHUNK)

    def _fetch_and_keep(self, target: Path) -> None:
        """Stream the file to the client while writing it to the cache; it is kept (atomically)
        only when it arrived whole and, for by-hash files, with the hash in its name."""
        try:
            response = urllib.request.urlopen(urllib.request.Request(self.path), timeout=120)  # noqa: S310
        except urllib.error.HTTPError as exc:
            self._refuse(exc.code, f"upstream: {exc.reason}")
            return
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            self._refuse(502, f"upstream: {exc}")
            return
        with response:
            expected = response.headers.get("Content-Length")
            if expected is None:
                # Without a length the client cannot tell a cut download: pass it through whole.
                body = response.read()
                self._send_upstream_headers(200, response.headers, len(body))
                self.wfile.write(body)
                return
            self._send_upstream_headers(200, response.headers, int(expected))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
            digest = hashlib.sha256()
            try:
                # The client gets each chunk once the next one is read, and the last one only
                # after the file is in the cache: a request right after this one is a hit.
                pending = b""
                with os.fdopen(fd, "wb") as out:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        if pending:
                            self.wfile.write(pending)
                        pending = chunk
                whole = os.path.getsize(partial) == int(expected)
                hashed = re.search(r"/by-hash/SHA256/([0-9a-f]{64})$", self.path)
                if whole and (not hashed or hashed.group(1) == digest.hexdigest()):
                    os.chmod(partial, 0o644)
                    os.replace(partial, target)
                self.wfile.write(pending)
                if not whole:
                    # The client got fewer bytes than announced: end the connection.
                    self.close_connection = True
            except (OSError, http.client.HTTPException):
                self.close_connection = True
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)


class CacheServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, address: tuple[str, int], log_path: Path | None = None,
                 hosts: tuple[str, ...] = ()):
        self.root = Path(root)
        self.log_path = log_path
        self.hosts = {h.lower() for h in (*MIRROR_HOSTS, *hosts)}
        self.counters = {"hits": 0, "misses": 0}
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(address, Handler)
        if log_path:
            log_path.write_text("")

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def handle_error(self, request, client_address) -> None:
        """An unexpected error in a request goes to the log, not to the test run's output."""
        import traceback

        if self.log_path:
            with open(self.log_path, "a") as out:
                out.write(f"{client_address[0]} error:\n{traceback.format_exc()}")


def answers(port: int = PORT, host: str = "127.0.0.1") -> bool:
    """Whether an apt cache of this kind already answers on the port."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(f"GET {IDENTITY_PATH} HTTP/1.0\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        return IDENTITY.strip() in reply
    except OSError:
        return False


def start(root: Path, port: int = PORT, log_path: Path | None = None, hosts: tuple[str, ...] = ()) -> CacheServer | None:
    """Serve the cache in a background thread; None when the port is taken (by another run's
    cache, which is then used as it is, or by something else). It listens on every address:
    the containers reach it on their network's gateway, and networks come and go during a run."""
    try:
        server = CacheServer(root, ("0.0.0.0", port), log_path, hosts)  # noqa: S104
    except OSError:
        return None
    threading.Thread(target=server.serve_forever, name="apt-cache", daemon=True).start()
    return server
