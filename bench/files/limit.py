"""LIMIT: the deployed app's WSGI handler called in one process, with no server in between.

Runs inside the target with the app's virtualenv, as the app user, through the deployment's
own WSGI entry (same settings module, environment file and release as the servers use).
Prints JSON: path -> requests per second of each round.
"""

import argparse
import io
import json
import sys
import time


def _environ(host, path):
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": host,
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
        "HTTP_ACCEPT": "*/*",
        "HTTPS": "on",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call(application, host, path):
    status = []

    def start_response(line, headers, exc_info=None):
        status.append(line)

    body = application(_environ(host, path), start_response)
    try:
        for _chunk in body:
            pass
    finally:
        if hasattr(body, "close"):
            body.close()
    return status[0]


def measure(application, host, path, seconds):
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    now = started
    while now < deadline:
        for _ in range(50):
            status = call(application, host, path)
            if not status.startswith("200"):
                raise SystemExit(f"{path} answered {status} in-process; LIMIT needs a 200 page")
        calls += 50
        now = time.perf_counter()
    return calls / (now - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wsgi-dir", required=True, help="directory of the deployment's WSGI entry")
    parser.add_argument("--module", default="django_app_wsgi")
    parser.add_argument("--host", required=True)
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, args.wsgi_dir)
    application = __import__(args.module).application
    results = {}
    for path in args.path:
        measure(application, args.host, path, min(2.0, args.seconds))  # warm-up: imports, caches
        results[path] = [measure(application, args.host, path, args.seconds) for _ in range(args.rounds)]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
