#!/usr/bin/env python3
"""Controller toolchain, Docker engine, test images and the test run of the collection.

Every step is safe to repeat: the virtualenv is rebuilt only when the pinned requirements
or the chosen Python change, an engine that already answers is left alone, and an image is
rebuilt only when its recipe changes. Only the standard library is used, so any python3
can run this file; the toolchain itself goes into .venv with the newest Python >= 3.11.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aptcache  # noqa: E402 - the harness's own module, next to it

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_STAMP = VENV / ".wsgistack-stamp"
REQUIREMENTS = ROOT / "tools" / "requirements.txt"
SCANNER_VENV = ROOT / ".cache" / "tls-scanner"
SCANNER_REQUIREMENTS = ROOT / "tools" / "tls-scanner-requirements.txt"
IMAGES_DIR = ROOT / "tests" / "images"
COLLECTION_LINK = ROOT / ".cache" / "collections" / "ansible_collections" / "wsgistack" / "django"
STATE_DIR = ROOT / ".cache"
MIN_PYTHON = (3, 11)

RECIPE_LABEL = "io.wsgistack.recipe"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# name -> Debian suite; these are the images the Molecule scenarios use by default.
DEBIAN_IMAGES = {"debian12": "bookworm", "debian13": "trixie"}
BASE_PACKAGES = "python3,ca-certificates"
BASE_REPO = "wsgistack/debian-base"
SYSTEMD_REPO = "wsgistack/systemd"


class HarnessError(Exception):
    """A problem the user can fix; the message says how."""


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def sha256(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------- Python / venv


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
        return True
    except ValueError:
        return False


def _candidate_pythons() -> list[str]:
    found = []
    for minor in range(20, MIN_PYTHON[1] - 1, -1):
        found.append(f"python3.{minor}")
    found.append("python3")
    paths = [shutil.which(name) for name in found]
    # pyenv keeps interpreters that are installed but not selected behind shims that
    # refuse to run, so look at its versions directly as well.
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    paths += sorted(glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python3")))
    paths += sorted(glob.glob("/usr/bin/python3.*[0-9]")) + sorted(glob.glob("/usr/local/bin/python3.*[0-9]"))
    unique = []
    for path in paths:
        # Never the project's own .venv (on PATH in the harness's child processes).
        if path and path not in unique and not _inside(Path(path).resolve(), VENV.resolve()) \
                and not Path(path).parent == VENV / "bin":
            unique.append(path)
    return unique


def _probe_python(path: str) -> tuple[tuple[int, int], str] | None:
    code = "import sys, venv, ensurepip; print(sys.version_info[0], sys.version_info[1], sys.executable)"
    try:
        result = subprocess.run([path, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    major, minor, executable = result.stdout.split(maxsplit=2)
    return (int(major), int(minor)), executable.strip()


def find_python() -> tuple[tuple[int, int], str]:
    best = None
    for path in _candidate_pythons():
        probed = _probe_python(path)
        if probed and probed[0] >= MIN_PYTHON and (best is None or probed[0] > best[0]):
            best = probed
    if best is None:
        raise HarnessError(
            "No Python >= 3.11 with the venv and ensurepip modules was found (looked for "
            "python3.11 and newer on PATH, in /usr/bin, /usr/local/bin and under pyenv). "
            "Install one, e.g. `apt-get install python3 python3-venv` on Debian 12/13 or "
            "Ubuntu 24.04, or `pyenv install 3.12`, then run the command again."
        )
    return best


def venv_bin(name: str) -> str:
    return str(VENV / "bin" / name)


def ensure_venv() -> None:
    version, python = find_python()
    stamp = sha256(REQUIREMENTS.read_bytes(), python, f"{version}")
    if VENV_STAMP.is_file() and VENV_STAMP.read_text().strip() == stamp and Path(venv_bin("python")).exists():
        log(f"Toolchain in .venv is up to date (Python {version[0]}.{version[1]})")
    else:
        if VENV.exists():
            log("Pinned requirements or Python changed: recreating .venv")
            shutil.rmtree(VENV)
        log(f"Creating .venv with {python} (Python {version[0]}.{version[1]})")
        run([python, "-m", "venv", str(VENV)])
        run([venv_bin("python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        log("Installing the pinned toolchain (tools/requirements.txt)")
        run([venv_bin("python"), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)])
        VENV_STAMP.write_text(stamp + "\n")
    ensure_scanner_venv(python, version)
    ensure_collection_link()


def ensure_scanner_venv(python: str, version: tuple) -> None:
    """sslyze, for the TLS tests, in a virtualenv of its own (its pins differ from the toolchain's)."""
    stamp_file = SCANNER_VENV / ".wsgistack-stamp"
    stamp = sha256(SCANNER_REQUIREMENTS.read_bytes(), python, f"{version}")
    if stamp_file.is_file() and stamp_file.read_text().strip() == stamp and (SCANNER_VENV / "bin" / "sslyze").exists():
        return
    shutil.rmtree(SCANNER_VENV, ignore_errors=True)
    log("Installing the TLS scanner (tools/tls-scanner-requirements.txt) into .cache/tls-scanner")
    run([python, "-m", "venv", str(SCANNER_VENV)])
    run([str(SCANNER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(SCANNER_REQUIREMENTS)])
    stamp_file.write_text(stamp + "\n")


def ensure_collection_link() -> None:
    """Make the checkout importable as wsgistack.django (ansible.cfg points here)."""
    target = os.path.relpath(ROOT, COLLECTION_LINK.parent)
    if COLLECTION_LINK.is_symlink() and os.readlink(COLLECTION_LINK) in (target, str(ROOT)):
        return
    COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
    if COLLECTION_LINK.is_symlink() or COLLECTION_LINK.is_file():
        COLLECTION_LINK.unlink()
    elif COLLECTION_LINK.is_dir():
        shutil.rmtree(COLLECTION_LINK)
    COLLECTION_LINK.symlink_to(target)


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    env.setdefault("PY_COLORS", "0")
    # The test containers mount it (.config/molecule/config.yml).
    env["WSGISTACK_WHEELHOUSE"] = str(WHEELHOUSE)
    env["WSGISTACK_SSLYZE"] = str(SCANNER_VENV / "bin" / "sslyze")
    # Tests enter the containers with nsenter as root; through the Docker engine otherwise.
    env.setdefault("WSGISTACK_CONNECTION", "wsgistack_container" if os.geteuid() == 0 else "community.docker.docker")
    if _wheelhouse_ready():
        # The scenarios then install with --no-index from it (django_app_pip_no_index).
        env["WSGISTACK_WHEELHOUSE_READY"] = "1"
    return env


# --------------------------------------------------------------------------- Docker engine


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


_APT_UPDATED = False


def apt_install(packages: list[str]) -> None:
    global _APT_UPDATED
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if not _APT_UPDATED:
            run(["apt-get", "update", "-qq"], env=env)
            _APT_UPDATED = True
        log(f"Installing {' '.join(packages)} with apt-get")
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise HarnessError(
            f"apt-get could not install {' '.join(packages)} ({exc}). Check that the Debian "
            "package mirror in /etc/apt/sources.list* is reachable, or install the packages "
            "yourself, then run the command again."
        ) from exc


def ensure_engine() -> None:
    if _docker_answers():
        log("Docker engine answers; using it as it is")
        return
    if os.geteuid() != 0:
        raise HarnessError(
            "No Docker engine answers `docker info`, and you are not root, so none is installed "
            "or started for you. Start your engine (e.g. `sudo systemctl start docker`) and make "
            "sure your user may use it (member of the `docker` group), then run the command again."
        )
    if not shutil.which("dockerd"):
        apt_install(["docker.io"])
    STATE_DIR.mkdir(exist_ok=True)
    logfile = STATE_DIR / "dockerd.log"
    if Path("/run/systemd/system").is_dir():
        log("Starting the Docker engine with systemctl")
        run(["systemctl", "start", "docker"])
    else:
        log(f"Starting dockerd in the background (log: {logfile})")
        with open(logfile, "ab") as out:
            subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if _docker_answers():
            log("Docker engine is up")
            return
        time.sleep(1)
    tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
    raise HarnessError(f"dockerd did not answer within 90 s. Last lines of {logfile}:\n{tail}")


# --------------------------------------------------------------------------- images


def _image_label(tag: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{ index .Config.Labels "{RECIPE_LABEL}" }}}}', tag],
        capture_output=True, text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _image_id(tag: str) -> str:
    return run(["docker", "image", "inspect", "--format", "{{ .Id }}", tag],
               capture_output=True, text=True).stdout.strip()


def _check_mirror(mirror: str, suite: str) -> None:
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read(64)
    except (urllib.error.URLError, OSError) as exc:
        raise HarnessError(
            f"The Debian mirror {mirror} does not answer for {suite} ({url}: {exc}). The test "
            "images are built from it with debootstrap. Set WSGISTACK_DEBIAN_MIRROR to a mirror "
            "you can reach (e.g. your local apt mirror) and run the command again."
        ) from exc


def build_debian_base(suite: str) -> str:
    tag = f"{BASE_REPO}:{suite}"
    recipe = sha256("minbase", suite, BASE_PACKAGES)
    if _image_label(tag) == recipe:
        log(f"Base image {tag} is up to date")
        return tag
    mirror = os.environ.get("WSGISTACK_DEBIAN_MIRROR", DEFAULT_MIRROR)
    _check_mirror(mirror, suite)
    if not shutil.which("debootstrap"):
        if os.geteuid() != 0:
            raise HarnessError("debootstrap is needed to build the base images: install it "
                               "(`sudo apt-get install debootstrap`) and run the command again.")
        apt_install(["debootstrap"])
    started = time.monotonic()
    log(f"Building {tag} with debootstrap from {mirror}")
    with tempfile.TemporaryDirectory(prefix="wsgistack-rootfs-", dir="/var/tmp") as rootfs:
        cmd = ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", suite, rootfs, mirror]
        if os.geteuid() != 0:
            raise HarnessError("debootstrap must run as root to build the base images; run the "
                               "command as root or build the images once with sudo.")
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise HarnessError(
                f"debootstrap {suite} failed (exit {result.returncode}):\n{result.stdout[-1500:]}"
                f"{result.stderr[-1500:]}\nCheck WSGISTACK_DEBIAN_MIRROR ({mirror}) and run again."
            )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "--change", f"LABEL {RECIPE_LABEL}={recipe}", "-", tag],
            stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise HarnessError(f"tar of the {suite} root file system failed")
    log(f"Built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def _extra_ca_certificates() -> list[Path]:
    return sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))


# Files of tests/images/ the Dockerfile copies, with their modes.
IMAGE_FILES = {"apt-proxy-detect": 0o755, "wsgistack_zipcache.py": 0o644}


def build_systemd_image(base: str, name: str) -> str:
    tag = f"{SYSTEMD_REPO}:{name}"
    dockerfile = (IMAGES_DIR / "systemd.Dockerfile").read_text()
    files = {name: (IMAGES_DIR / name).read_bytes() for name in IMAGE_FILES}
    certs = _extra_ca_certificates()
    recipe = sha256(dockerfile, *files.values(), _image_id(base), *[c.read_bytes() for c in certs])
    if _image_label(tag) == recipe:
        log(f"Image {tag} is up to date")
        return tag
    started = time.monotonic()
    log(f"Building {tag} from {base}" + (f" with {len(certs)} extra CA certificate(s)" if certs else ""))
    with tempfile.TemporaryDirectory(prefix="wsgistack-image-") as context:
        ctx = Path(context)
        (ctx / "Dockerfile").write_text(dockerfile)
        for name, data in files.items():
            (ctx / name).write_bytes(data)
            (ctx / name).chmod(IMAGE_FILES[name])
        (ctx / "ca-certificates").mkdir()
        (ctx / "ca-certificates" / ".keep").write_text("")
        for index, cert in enumerate(certs):
            shutil.copyfile(cert, ctx / "ca-certificates" / f"host-{index}-{cert.name}")
        env = dict(os.environ)
        if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
            env["DOCKER_BUILDKIT"] = "0"
        result = subprocess.run(
            ["docker", "build", "--build-arg", f"BASE={base}", "--label", f"{RECIPE_LABEL}={recipe}",
             "-t", tag, str(ctx)],
            capture_output=True, text=True, env=env,
        )
        if result.returncode != 0:
            raise HarnessError(f"Building {tag} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    log(f"Built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def ensure_images(extra: list[str] | None = None) -> None:
    for name, suite in DEBIAN_IMAGES.items():
        build_systemd_image(build_debian_base(suite), name)
    for spec in extra or []:
        base, _, name = spec.partition("=")
        if not name:
            raise HarnessError(f"--from takes BASE=NAME (e.g. ubuntu:24.04=ubuntu2404), not {spec!r}")
        if subprocess.run(["docker", "image", "inspect", base], capture_output=True).returncode != 0:
            run(["docker", "pull", base])
        build_systemd_image(base, name)


# --------------------------------------------------------------------------- test run

LOG_DIR = STATE_DIR / "test-logs"
# Kept outside the checkout, so that every clone (CI clones afresh) finds what earlier runs downloaded.
CACHE_HOME = Path(os.environ.get("WSGISTACK_CACHE_DIR")
                  or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wsgistack")
DURATIONS = CACHE_HOME / "test-durations.json"
APT_CACHE_DIR = CACHE_HOME / "apt"
# Wheels of the example project's requirements for the targets' Pythons (Debian 12/13, Ubuntu
# 22.04/24.04), mounted read-only in the test containers, whose inventories point
# django_app_pip_find_links at it: pip takes them from there instead of downloading them.
WHEELHOUSE = CACHE_HOME / "wheels"
WHEELHOUSE_IN_CONTAINER = "/var/cache/wsgistack/wheels"
WHEEL_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
WHEEL_REQUIREMENTS = sorted((ROOT / "examples" / "mysite" / "requirements").glob("*.txt"))
MOLECULE_PHASES = ("destroy", "syntax", "create", "prepare", "converge", "idempotence", "check", "side_effect",
                   "verify", "cleanup")
# "INFO     [scenario > converge] Executing" (plain) or "INFO     scenario ➜ converge: Executing" (terminal).
PHASE_LINE = re.compile(r"[\s>](" + "|".join(MOLECULE_PHASES) + r")(?:\]|:)\s+Executing\s*$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def scenarios() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


@dataclass
class Job:
    """One step of a test run: a command whose output goes to its own log file."""

    name: str
    cmd: list[str]
    ok: bool = False
    seconds: float = 0.0
    phases: list[tuple[str, float]] = field(default_factory=list)
    log: Path | None = None
    proc: subprocess.Popen | None = None
    # Checks that need no container (lint, unit tests): beside the scenarios, they run at the lowest
    # CPU priority, on what the scenarios leave idle (their waits for services, timers and engines).
    background: bool = False

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")


def run_job(job: Job, niced: bool = False) -> Job:
    """Run the job's command, its output (with each molecule phase's start) into its log, at the
    lowest CPU priority when `niced`. Any error of the harness itself makes the step fail with
    the error in its log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    job.log = LOG_DIR / f"{job.slug}.log"
    started = time.monotonic()
    phase, phase_started = None, started
    cmd = ["nice", "-n", "19", *job.cmd] if niced else job.cmd
    with open(job.log, "w") as out:
        out.write(f"$ {' '.join(map(str, cmd))}\n")
        out.flush()
        try:
            # Unbuffered, so that each phase's start is seen when it happens.
            env = dict(tool_env(), PYTHONUNBUFFERED="1")
            job.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1)
            for line in job.proc.stdout:
                out.write(line)
                match = PHASE_LINE.search(ANSI.sub("", line))
                if match:
                    now = time.monotonic()
                    if phase:
                        job.phases.append((phase, now - phase_started))
                    phase, phase_started = match.group(1), now
            code = job.proc.wait()
        except Exception as exc:  # noqa: BLE001 - reported as the step's failure
            out.write(f"\nthe harness could not run this step: {exc!r}\n")
            code = -1
        if phase:
            job.phases.append((phase, time.monotonic() - phase_started))
        job.seconds = time.monotonic() - started
        job.ok = code == 0
        out.write(f"\n[exit {code} after {job.seconds:.0f} s]\n")
    return job


def default_jobs() -> int:
    """Concurrent jobs: one per core (a scenario keeps about one core busy between its Ansible
    controller and its containers; more only adds load that makes the tests' waits slow), but
    at least two, and no more than one per 3 GiB of available memory (a scenario's containers
    and Ansible take up to about that)."""
    if os.environ.get("WSGISTACK_JOBS"):
        try:
            return max(1, int(os.environ["WSGISTACK_JOBS"]))
        except ValueError as exc:
            raise HarnessError(f"WSGISTACK_JOBS must be a whole number, not {os.environ['WSGISTACK_JOBS']!r}") from exc
    available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        available = 0
    by_memory = max(1, available // (3 << 30)) if available else 2
    return max(1, min(max(2, os.cpu_count() or 1), by_memory))


# Seconds each step took on a 2-core machine, two steps at a time: the order of a first run,
# before .cache durations of this machine exist (the longest first, so none is left alone at the end).
EXPECTED_SECONDS = {
    "molecule django_app": 2000, "molecule sites": 1800, "molecule topology": 1750, "molecule site": 1500,
    "molecule workers": 1000, "molecule nginx_uwsgi": 850, "molecule certbot": 650,
    "package: build, offline install, converge": 400, "molecule supervisor": 300, "molecule apache_modwsgi": 300,
    "molecule certbot_apache": 200, "unit tests": 270, "ansible-test sanity": 200, "ansible-lint": 90,
}


def _known_durations() -> dict[str, float]:
    try:
        return json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}


def _shown(path: Path) -> str:
    return os.path.relpath(path, ROOT) if _inside(path, ROOT) else str(path)


def run_jobs(jobs: list[Job], workers: int) -> list[Job]:
    """Run the jobs on a pool of `workers`, the longest (by the last run) first; beside scenarios,
    the background jobs go one at a time, niced, in a lane of their own. Report each as it ends,
    then print the full log of every failed one. Ctrl-C stops the running steps and starts no other."""
    known = _known_durations()
    ordered = sorted(jobs, key=lambda j: -known.get(j.name, EXPECTED_SECONDS.get(j.name, 30)))
    main = [job for job in ordered if not job.background]
    side = [job for job in ordered if job.background] if main else []
    main = main or ordered
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    # Only this run's steps: another run (other scenarios) may still be writing its logs.
    for job in jobs:
        (LOG_DIR / f"{job.slug}.log").unlink(missing_ok=True)
    lane = f" (and {len(side)} niced beside them, one at a time)" if side else ""
    log(f"{len(main)} steps on {min(workers, len(main))} worker(s){lane}; logs in {_shown(LOG_DIR)}/")
    pools = [ThreadPoolExecutor(max_workers=min(workers, len(main)))] + ([ThreadPoolExecutor(max_workers=1)] if side else [])
    try:
        futures = [pools[0].submit(run_job, job) for job in main] + [pools[-1].submit(run_job, job, True) for job in side]
        for future in as_completed(futures):
            job = future.result()
            log(f"{job.name}: {'ok' if job.ok else 'FAILED'} in {job.seconds:.0f} s ({_shown(job.log)})")
    except BaseException:
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        for job in jobs:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.terminate()
        raise
    for pool in pools:
        pool.shutdown()
    known.update({j.name: round(j.seconds) for j in jobs if j.ok})
    DURATIONS.parent.mkdir(parents=True, exist_ok=True)
    DURATIONS.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    for job in jobs:
        if not job.ok:
            print("\n" + "#" * 80 + f"\n# FAILED: {job.name}: full log ({job.log})\n" + "#" * 80, flush=True)
            print(job.log.read_text(errors="replace") if job.log and job.log.exists() else "(no log)", flush=True)
    return jobs


def lint_jobs() -> list[Job]:
    python_dirs = ["tools", "tests", "molecule", "plugins", "roles", "examples", "bench"]
    return [
        Job("yamllint", [venv_bin("yamllint"), "--strict", "."], background=True),
        Job("ansible-lint", [venv_bin("ansible-lint")], background=True),
        Job("ruff", [venv_bin("ruff"), "check", "--config", "tools/ruff.toml", *python_dirs], background=True),
        Job("ansible-test sanity", [sys.executable, str(Path(__file__).resolve()), "sanity"], background=True),
    ]


# Outside the checkout: inside a git work tree ansible-test lists git's files, and .cache is ignored.
SANITY_DIR = CACHE_HOME / "sanity"
# ansible-test bootstraps pip in each virtualenv with a script it downloads from a host that may not
# be reachable; this one (pip from ensurepip, then the requested packages from the package index)
# takes its place in ansible-test's cache.
PIP_BOOTSTRAP = """\
# wsgistack: pip from ensurepip, then the requested packages from the package index.
import ensurepip
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
arguments = [argument for argument in sys.argv[1:] if argument not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *arguments]))
"""


def run_sanity() -> None:
    """ansible-test sanity on the collection as Galaxy and Automation Hub see it: the built
    artifact, unpacked into an ansible_collections/wsgistack/django tree."""
    env = tool_env()
    shutil.rmtree(SANITY_DIR, ignore_errors=True)
    tree = SANITY_DIR / "ansible_collections" / "wsgistack" / "django"
    tree.mkdir(parents=True)
    run([venv_bin("ansible-galaxy"), "collection", "build", "--output-path", str(SANITY_DIR), str(ROOT)], env=env,
        stdout=subprocess.DEVNULL)
    artifact = next(SANITY_DIR.glob("*.tar.gz"))
    with tarfile.open(artifact) as archive:
        # The "data" filter (Python 3.11.4 and later) refuses links and paths that leave the tree.
        if hasattr(tarfile, "data_filter"):
            archive.extractall(tree, filter="data")
        else:
            archive.extractall(tree)  # noqa: S202 - our own artifact, just built
    requirements = "".join(path.read_text() for path in VENV.glob(
        "lib/python3*/site-packages/ansible_test/_internal/python_requirements.py"))
    found = re.search(r"pip='([0-9.]+)'", requirements)
    if found:
        cache = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{found.group(1).replace('.', '_')}.py"
        cache.parent.mkdir(parents=True, exist_ok=True)
        # ansible-test's own download (or another project's script) stays as it is.
        if not cache.exists() or cache.read_text().startswith(PIP_BOOTSTRAP.splitlines()[0]):
            cache.write_text(PIP_BOOTSTRAP)
    version = run([venv_bin("python"), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                  capture_output=True, text=True).stdout.strip()
    run([venv_bin("ansible-test"), "sanity", "--venv", "--python", version, "--color", "no"], cwd=tree, env=env)


def unit_jobs() -> list[Job]:
    return [Job("unit tests", [venv_bin("pytest"), "-q", "-p", "no:cacheprovider", "tests/unit"], background=True)]


def molecule_jobs(names: list[str]) -> list[Job]:
    unknown = sorted(set(names) - set(scenarios()))
    if unknown:
        raise HarnessError(f"No Molecule scenario named {', '.join(unknown)}; there are: {', '.join(scenarios())}")
    return [Job(f"molecule {name}", [venv_bin("molecule"), "test", "-s", name]) for name in names]


def package_jobs() -> list[Job]:
    return [Job("package: build, offline install, converge", [sys.executable, str(Path(__file__).resolve()),
                                                               "package", "--prepared"])]


def _wheelhouse_stamp() -> str:
    return sha256(platform.machine(), *WHEEL_PYTHONS, *[f.read_bytes() for f in WHEEL_REQUIREMENTS])


def _wheelhouse_ready() -> bool:
    stamp_file = WHEELHOUSE / ".stamp"
    return stamp_file.is_file() and stamp_file.read_text().strip() == _wheelhouse_stamp()


def _python_of_version(version: str) -> str | None:
    """An interpreter of this minor version with pip (not the project's .venv), or None."""
    for path in _candidate_pythons():
        probe = subprocess.run([path, "-c", "import sys, pip; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return path
    return None


def ensure_wheelhouse() -> None:
    """Download the wheels once per change of the requirements; a failure only costs speed
    (pip in the containers then goes to the index as usual)."""
    machine = platform.machine()
    stamp_file = WHEELHOUSE / ".stamp"
    if _wheelhouse_ready():
        log(f"Wheelhouse {_shown(WHEELHOUSE)} is up to date")
        return
    (WHEELHOUSE / ".stamp").unlink(missing_ok=True)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform={tag}_{machine}" for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014")]
    requirements = [arg for f in WHEEL_REQUIREMENTS for arg in ("-r", str(f))]
    common = ["-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(WHEELHOUSE),
              "--only-binary=:all:"]
    for version in WHEEL_PYTHONS:
        # pip evaluates environment markers (python_version < "3.13") with the Python it runs on,
        # so each version's wheels come from an interpreter of that version when there is one.
        same = _python_of_version(version)
        if same:
            cmd = [same, *common, *requirements]
        else:
            cmd = [venv_bin("python"), *common, "--implementation=cp", f"--python-version={version}", *platforms,
                   *requirements]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            log(f"Could not fill the wheelhouse for Python {version} (pip in the test containers will download "
                f"instead):\n{result.stderr[-1500:]}")
            return
        if not same and version < f"{sys.version_info[0]}.{sys.version_info[1]}":
            log(f"No Python {version} here: its wheels were chosen by a newer one; a requirement only older "
                "Pythons need may be missing (the scenarios then fail to install it)")
    stamp_file.write_text(_wheelhouse_stamp() + "\n")
    log(f"Wheelhouse {_shown(WHEELHOUSE)} filled for Python {', '.join(WHEEL_PYTHONS)}")


def start_package_caches() -> None:
    """The apt cache proxy (in this process) and the wheelhouse, both kept between runs; test
    containers use them when they answer or exist."""
    ensure_wheelhouse()
    if aptcache.answers():
        log(f"An apt package cache already answers on port {aptcache.PORT}; using it")
        return
    mirror = urllib.parse.urlsplit(os.environ.get("WSGISTACK_DEBIAN_MIRROR", DEFAULT_MIRROR)).hostname
    server = aptcache.start(APT_CACHE_DIR, log_path=CACHE_HOME / "apt-cache.log", hosts=(mirror,) if mirror else ())
    if server is None:
        log(f"Port {aptcache.PORT} is taken by something else: test containers download packages directly")
    else:
        log(f"apt package cache on port {aptcache.PORT} (files in {_shown(APT_CACHE_DIR)}/)")


# --------------------------------------------------------------------------- demo and package

DEMO_CONTAINER = "wsgistack-demo"
PACKAGE_CONTAINER = "wsgistack-pkgtest"
PACKAGE_DIR = STATE_DIR / "package-test"
# The same systemd flags as the Molecule platforms that run site.yml (NET_ADMIN: the host firewall).
SYSTEMD_FLAGS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cgroupns", "host", "--security-opt", "seccomp=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
]


def start_target(name: str, image: str = f"{SYSTEMD_REPO}:debian12", publish: list[str] | None = None,
                 volumes: list[str] | None = None) -> None:
    """A systemd container to converge, started unless it already runs."""
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
    if state.returncode == 0 and state.stdout.strip() == "true":
        log(f"{name} is running")
        return
    if state.returncode == 0:
        run(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL)
    ports = [arg for mapping in (publish or []) for arg in ("-p", mapping)]
    ports += [arg for mapping in (volumes or []) for arg in ("-v", mapping)]
    log(f"Starting {name} from {image}")
    run(["docker", "run", "-d", "--name", name, "--hostname", name, *SYSTEMD_FLAGS, *ports, image, "/lib/systemd/systemd"],
        stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = subprocess.run(["docker", "exec", name, "systemctl", "is-system-running"], capture_output=True, text=True)
        if probe.stdout.strip() in ("running", "degraded"):
            return
        time.sleep(1)
    raise HarnessError(f"systemd in {name} did not come up within 60 s (docker logs {name})")


def stop_target(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def converge(inventory: Path, playbook: str, cwd: Path, env: dict[str, str],
             extra_args: list[str] | None = None, shown: list[str] | None = None) -> tuple[float, dict[str, int]]:
    """Run a playbook; return its duration and the summed PLAY RECAP counters. Its output goes
    into `shown` when one is given."""
    import re

    cmd = ["ansible-playbook", "-i", str(inventory), playbook, *(extra_args or [])]
    log(" ".join(cmd))
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - started
    if shown is not None:
        shown.append(proc.stdout)
    print(proc.stdout[-4000:] if proc.returncode == 0 else proc.stdout)
    if proc.returncode != 0:
        raise HarnessError(f"the playbook failed (exit {proc.returncode}); see the output above")
    totals: dict[str, int] = {}
    for line in re.findall(r"^\S+\s+:\s+(ok=.*)$", proc.stdout, re.M):
        for key, value in re.findall(r"(\w+)=(\d+)", line):
            totals[key] = totals.get(key, 0) + int(value)
    return seconds, totals


def https_answer(container: str, name: str, path: str = "/") -> tuple[str, str]:
    """Status and body of an HTTPS request made inside the container, with the site's name as SNI."""
    proc = subprocess.run(
        ["docker", "exec", container, "curl", "-sk", "--max-time", "10", "--resolve", f"{name}:443:127.0.0.1",
         "-w", "\n%{http_code}", f"https://{name}{path}"], capture_output=True, text=True)
    body, _, status = proc.stdout.rpartition("\n")
    return status, body


def run_demo() -> None:
    """The example site on a local container, converged with the local inventory."""
    start_target(DEMO_CONTAINER, publish=["127.0.0.1:8443:443"])
    env = tool_env()
    seconds, totals = converge(ROOT / "inventories" / "local", "site.yml", ROOT, env)
    status, body = https_answer(DEMO_CONTAINER, "mysite.localhost")
    if status != "200":
        raise HarnessError(f"the site answered {status or 'nothing'} over HTTPS:\n{body[:2000]}")
    print("\n" + "=" * 60)
    print(f"converged in {seconds:.0f} s: {totals.get('changed', 0)} changed tasks, {totals.get('failed', 0)} failed")
    print(f"https://mysite.localhost/ inside {DEMO_CONTAINER} answered {status}:")
    print("\n".join(body.strip().splitlines()[:14]))
    print("\nFrom this machine: https://mysite.localhost:8443/ (self-signed certificate).")
    print("Tear down with: make demo-down")


def build_and_install_collection(target: Path) -> Path:
    """ansible-galaxy collection build, then an offline install into target."""
    dist = STATE_DIR / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir(parents=True)
    env = tool_env()
    run([venv_bin("ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(ROOT)], env=env,
        stdout=subprocess.DEVNULL)
    tarball = next(dist.glob("wsgistack-django-*.tar.gz"))
    shutil.rmtree(target, ignore_errors=True)
    # --force: the checkout itself is installed for the repository's own ansible.cfg.
    run([venv_bin("ansible-galaxy"), "collection", "install", "--offline", "--no-deps", "--force", "-p", str(target),
         str(tarball)], env=env, cwd=target.parent, stdout=subprocess.DEVNULL)
    if not (target / "ansible_collections" / "wsgistack" / "django" / "playbooks" / "site.yml").is_file():
        raise HarnessError(f"{tarball.name} did not install into {target}")
    return tarball


# The local inventory's settings with PostgreSQL on the same host instead of SQLite (the later
# keys win): the app reaches it through its unix socket, and it listens on no network address.
PACKAGE_DB_PASSWORD = "package-test-db-password-3f9a"
PACKAGE_DATABASE = f"""---
django_app_requirements_file: requirements/production.txt
django_app_database:
  engine: postgresql
  name: mysite
  user: mysite
  password: {PACKAGE_DB_PASSWORD}
  host: localhost
"""
PACKAGE_PS_SAMPLER = ("rm -f /root/ps.log /root/ps.stop; while [ ! -e /root/ps.stop ]; do echo '-- sample';"
                      " ps -eo args; sleep 0.2; done >> /root/ps.log")


def package_secret_leaks(output: str, secrets: list[str]) -> list[str]:
    """Where the package test's secrets show: the run's output, the sampled process list, files
    that user nobody can read in the container."""
    leaks = [f"in the output: {secret[:4]}..." for secret in secrets if secret in output]
    samples = subprocess.run(["docker", "exec", PACKAGE_CONTAINER, "cat", "/root/ps.log"],
                             capture_output=True, text=True).stdout
    if samples.count("-- sample\n") < 20:
        leaks.append(f"the process list was sampled {samples.count('-- sample')} times only")
    leaks += [f"in the process list: {secret[:4]}..." for secret in secrets if secret in samples]
    grep = ["runuser", "-u", "nobody", "--", "grep", "-rlsF", *[f"-e{secret}" for secret in secrets],
            "/srv", "/etc", "/var", "/run", "/tmp", "/home", "/opt"]
    readable = subprocess.run(["docker", "exec", PACKAGE_CONTAINER, *grep], capture_output=True, text=True).stdout
    leaks += [f"readable by anyone: {path}" for path in readable.split()]
    return leaks

# Run in the container: the TCP ports something listens on, and the server the app's
# database connection reaches (a directory for a unix socket).
PACKAGE_DB_PROBE = r"""
set -e
python3 - <<'PY'
ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            ports.add(int(local.rsplit(":", 1)[1], 16))
print("listening:", " ".join(map(str, sorted(ports))))
PY
/srv/mysite/bin/python -c "import django; django.setup(); from django.db import connection;
connection.ensure_connection(); print('database host:', connection.connection.info.host)"
"""

PACKAGE_PLAYBOOK = """---
- name: The site, from the installed collection
  ansible.builtin.import_playbook: wsgistack.django.site
"""


def run_package_test() -> None:
    """The built tarball installs offline elsewhere; its site playbook checks (--check) and then
    converges a bare container that is its own database host (PostgreSQL on the unix socket
    only), and a second run changes nothing."""
    shutil.rmtree(PACKAGE_DIR, ignore_errors=True)
    inventory = PACKAGE_DIR / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    tarball = build_and_install_collection(PACKAGE_DIR / "collections")
    log(f"Installed {tarball.name} into {PACKAGE_DIR / 'collections'}")
    (PACKAGE_DIR / "site.yml").write_text(PACKAGE_PLAYBOOK)
    # One server that is also its own database host (groups web and db), as small sites run.
    (inventory / "hosts.yml").write_text(
        f"---\nweb:\n  hosts:\n    {PACKAGE_CONTAINER}:\n      ansible_connection: {tool_env()['WSGISTACK_CONNECTION']}\n"
        f"db:\n  hosts:\n    {PACKAGE_CONTAINER}:\n")
    local = (ROOT / "inventories" / "local" / "group_vars" / "all" / "main.yml").read_text()
    for replaced in ("django_app_requirements_file: requirements/local.txt\n", "django_app_database:\n  engine: sqlite\n"):
        if replaced not in local:
            raise HarnessError(f"inventories/local no longer says {replaced.strip()!r}: update the package test")
    source = str(ROOT / "examples" / "mysite")
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        local.replace('"{{ inventory_dir }}/../../examples/mysite"', f'"{source}"')
        .replace("django_app_requirements_file: requirements/local.txt\n", "")
        .replace("django_app_database:\n  engine: sqlite\n", "")
        + f"\n# The test run's wheels (tools/harness.py).\ndjango_app_pip_find_links: {WHEELHOUSE_IN_CONTAINER}\n"
        + f"django_app_pip_no_index: {str(os.environ.get('WSGISTACK_WHEELHOUSE_READY') == '1').lower()}\n")
    (inventory / "group_vars" / "all" / "database.yml").write_text(PACKAGE_DATABASE)
    env = tool_env()
    env["ANSIBLE_COLLECTIONS_PATH"] = str(PACKAGE_DIR / "collections")
    # The scenarios' connection: nsenter into the container (tests/plugins/connection).
    env["ANSIBLE_CONNECTION_PLUGINS"] = str(ROOT / "tests" / "plugins" / "connection")
    env.pop("ANSIBLE_CONFIG", None)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    stop_target(PACKAGE_CONTAINER)  # a leftover one may lack the mounts
    start_target(PACKAGE_CONTAINER, volumes=[f"{WHEELHOUSE}:{WHEELHOUSE_IN_CONTAINER}:ro"])
    try:
        # A check run on the bare host reports what the first run would do, fails nowhere
        # and changes nothing.
        seconds, totals = converge(inventory, "site.yml", PACKAGE_DIR, env, ["--check"])
        untouched = subprocess.run(["docker", "exec", PACKAGE_CONTAINER, "sh", "-c",
                                    "! test -e /srv/mysite && ! id mysite && ! dpkg -s nginx"], capture_output=True)
        if totals.get("changed", 0) == 0 or totals.get("failed", 0) or untouched.returncode != 0:
            raise HarnessError(f"site.yml --check on the bare host: {totals}, host untouched: {untouched.returncode == 0}")
        log(f"check run on the bare host: {totals.get('changed')} changes reported, none made, in {seconds:.0f} s")
        # The first converge with -vvv while the container's process list is sampled: no secret
        # shows in either, nor in any file user nobody can read afterwards.
        subprocess.run(["docker", "exec", "-d", PACKAGE_CONTAINER, "sh", "-c", PACKAGE_PS_SAMPLER], check=True)
        shown: list[str] = []
        try:
            seconds, totals = converge(inventory, "site.yml", PACKAGE_DIR, env, ["-vvv"], shown=shown)
        finally:
            subprocess.run(["docker", "exec", PACKAGE_CONTAINER, "touch", "/root/ps.stop"], check=False)
        secrets = [PACKAGE_DB_PASSWORD, (inventory / ".secrets" / "django_secret_key").read_text().strip()]
        leaks = package_secret_leaks(shown[0], secrets)
        if leaks:
            raise HarnessError("secrets of the first converge were shown: " + "; ".join(leaks))
        log("first converge (-vvv): no secret in its output, the process list or files others can read")
        status, body = https_answer(PACKAGE_CONTAINER, "mysite.localhost")
        if status != "200" or "release 1" not in body:
            raise HarnessError(f"the packaged site answered {status or 'nothing'}:\n{body[:2000]}")
        log(f"packaged collection converged in {seconds:.0f} s; HTTPS answered {status}")
        probe = subprocess.run(["docker", "exec", PACKAGE_CONTAINER, "sh", "-c", PACKAGE_DB_PROBE],
                               capture_output=True, text=True)
        listening = re.search(r"^listening:(.*)$", probe.stdout, re.M)
        host = re.search(r"^database host: (.*)$", probe.stdout, re.M)
        if probe.returncode != 0 or not listening or "5432" in listening.group(1).split() \
                or "443" not in listening.group(1).split() \
                or not host or host.group(1) != "/var/run/postgresql":
            raise HarnessError("PostgreSQL on the web host should listen on no network address and the app reach it"
                               f" through /var/run/postgresql:\n{probe.stdout}{probe.stderr}")
        log(f"PostgreSQL on the host: the app connects through {host.group(1)}; listening on TCP:{listening.group(1)}")
        # Running the same inventory again must change nothing.
        again, totals = converge(inventory, "site.yml", PACKAGE_DIR, env)
        if totals.get("changed", -1) != 0 or totals.get("ok", 0) == 0:
            raise HarnessError(f"a second run of the packaged site.yml was not a no-op: {totals}")
        log(f"second run: {totals.get('ok')} ok, 0 changed, in {again:.0f} s")
    finally:
        stop_target(PACKAGE_CONTAINER)


def report(jobs: list[Job], started: float) -> int:
    print("\n" + "=" * 72)
    print(f"{'step':<48} {'result':<8} {'seconds':>8}")
    for job in jobs:
        print(f"{job.name:<48} {'ok' if job.ok else 'FAILED':<8} {job.seconds:>8.0f}")
        for phase, seconds in job.phases:
            print(f"{'  ' + phase:<48} {'':<8} {seconds:>8.0f}")
    print(f"{'total (wall clock)':<48} {'':<8} {time.monotonic() - started:>8.0f}")
    passed = sum(1 for job in jobs if job.ok)
    print(f"steps: {passed} passed, {len(jobs) - passed} failed")
    for job in jobs:
        if not job.ok:
            print(f"\n--- why {job.name} failed (its full log is printed above) ---")
            print(failure_digest(job.log.read_text(errors="replace") if job.log and job.log.exists() else ""))
    return 0 if passed == len(jobs) else 1


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TASK_LINE = re.compile(r"^(TASK|RUNNING HANDLER) \[")
_FAILED_RESULT = re.compile(r"^(fatal|failed): \[")
# Lines that say why on their own: Ansible's and Molecule's errors (and the tasks Molecule names
# after them), pytest's failures and assertion lines, the harness's own.
_FAILURE_LINE = re.compile(r"^(\[ERROR\]: |ERROR |CRITICAL |FAILED |E   |\* \[|the harness could not run|\S+Error: )")


def failure_digest(text: str, limit: int = 60) -> str:
    """At most `limit` lines of a failed step's log that tell why, each cut to 400 characters:
    each failed task (its TASK or handler line, the failure and the result lines indented under
    it, not the failures Ansible ignored) and each error line; else the log's last lines."""
    lines = [_ANSI.sub("", line) for line in text.splitlines()]
    picked: list[str] = []
    task = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if _TASK_LINE.match(line):
            task = line
        elif _FAILED_RESULT.match(line):
            block = [task, line] if task else [line]
            while index < len(lines) and lines[index].startswith(" "):
                block.append(lines[index])
                index += 1
            if index < len(lines) and lines[index].startswith("...ignoring"):
                continue
            # The result's first lines: its message, rc and output come first in YAML.
            picked += [entry[:400] for entry in block[:20]]
        elif _FAILURE_LINE.match(line) and not line.startswith("FAILED - RETRYING"):
            picked.append(line[:400])
    return "\n".join(picked[-limit:] if picked else [line[:400] for line in lines[-limit:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create or update .venv with the pinned toolchain")
    sub.add_parser("engine", help="make sure a Docker engine answers (installs/starts one as root)")
    images = sub.add_parser("images", help="build the systemd test images when their recipe changed")
    images.add_argument("--from", dest="extra", action="append", default=[], metavar="BASE=NAME",
                        help="also build wsgistack/systemd:NAME on top of BASE (e.g. ubuntu:24.04=ubuntu2404)")
    sub.add_parser("lint", help="yamllint, ansible-lint, ruff and ansible-test sanity")
    sub.add_parser("sanity", help="ansible-test sanity on the built collection")
    sub.add_parser("unit", help="pytest unit tests (no containers)")
    jobs_help = "steps run at the same time (default: from cores and free memory; WSGISTACK_JOBS overrides)"
    mol = sub.add_parser("molecule", help="molecule test for the given scenarios (default: all), side by side")
    mol.add_argument("scenario", nargs="*")
    mol.add_argument("-j", "--jobs", type=int, help=jobs_help)
    package = sub.add_parser("package", help="build the collection, install it offline elsewhere and converge a "
                                             "container with it")
    package.add_argument("--prepared", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("demo", help="the example site on a local container (inventories/local), checked over HTTPS")
    sub.add_parser("demo-down", help="remove the demo container")
    test = sub.add_parser("test", help="setup, engine, images, then lint, unit tests, every Molecule scenario and "
                                       "the package test, side by side")
    test.add_argument("-j", "--jobs", type=int, help=jobs_help)
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        if args.command == "setup":
            ensure_venv()
            return 0
        if args.command == "engine":
            ensure_engine()
            return 0
        if args.command == "images":
            ensure_engine()
            ensure_images(args.extra)
            return 0
        if args.command == "demo-down":
            stop_target(DEMO_CONTAINER)
            log(f"{DEMO_CONTAINER} removed")
            return 0
        if args.command == "sanity":
            ensure_venv()
            run_sanity()
            return 0
        if args.command == "package" and args.prepared:
            # A step of a test run: the toolchain, engine, images and caches are there already.
            run_package_test()
            return 0
        ensure_venv()
        if args.command == "demo":
            ensure_engine()
            ensure_images()
            start_package_caches()
            run_demo()
            return 0
        jobs: list[Job] = []
        if args.command in ("lint", "test"):
            jobs += lint_jobs()
        if args.command in ("unit", "test"):
            jobs += unit_jobs()
        if args.command in ("molecule", "test"):
            jobs += molecule_jobs(getattr(args, "scenario", None) or scenarios())
        if args.command in ("package", "test"):
            jobs += package_jobs()
        if args.command in ("molecule", "package", "test"):
            ensure_engine()
            ensure_images()
            start_package_caches()
        workers = default_jobs() if getattr(args, "jobs", None) is None else args.jobs
        if workers < 1:
            raise HarnessError("-j takes a number of 1 or more")
        run_jobs(jobs, workers)
    except HarnessError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted: the running steps were stopped.", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"\nERROR: {' '.join(map(str, exc.cmd))} failed with exit {exc.returncode}", file=sys.stderr)
        return 2
    return report(jobs, started)


if __name__ == "__main__":
    sys.exit(main())
