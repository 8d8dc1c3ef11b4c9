"""Helpers shared by the Molecule testinfra suites.

Tests run on the controller inside `molecule verify`; checks on a host go through
testinfra's ansible backend (commands run inside the container). Playbook runs use the
scenario's own inventory, so a test can re-converge with changed inputs the way a user would.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import yaml

CONNECTION_PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "connection" / "wsgistack_container.py"


def _container_connection():
    """The scenarios' connection plugin as a module (its container_pid)."""
    import importlib.util
    import sys

    module = sys.modules.get("wsgistack_container_connection")
    if module is None:
        spec = importlib.util.spec_from_file_location("wsgistack_container_connection", CONNECTION_PLUGIN)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[spec.name] = module
    return module


def _register_container_backend() -> None:
    """testinfra runs its commands the way the playbooks' connection (wsgistack_container) does:
    nsenter into the container with the container's environment, no Docker engine round trip."""
    import shlex

    import testinfra
    import testinfra.backend
    import testinfra.utils.ansible_runner as ansible_runner
    from testinfra.backend.docker import DockerBackend

    class ContainerBackend(DockerBackend):
        NAME = "wsgistack-container"

        def run(self, command, *args, **kwargs):
            cmd = self.get_command(command, *args)
            connection = _container_connection()
            pid = connection.container_pid(self.name)
            variables = connection.container_environment(pid)
            user = ["setpriv", f"--reuid={self.user}", "--regid={self.user}", "--init-groups"] if self.user else []
            prefix = ["nsenter", "--ipc", "--mount", "--net", "--pid", "--uts", f"--target={pid}", "--",
                      "env", "-i", *variables, *user, "/bin/sh", "-c"]
            out = self.run_local(" ".join(map(shlex.quote, prefix)).replace("%", "%%") + " %s", cmd)
            out.command = self.encode(cmd)
            return out

    globals()["ContainerBackend"] = ContainerBackend
    # A URL scheme cannot hold "_": testinfra's name for it has a "-".
    testinfra.backend.BACKENDS["wsgistack-container"] = f"{__name__}.ContainerBackend"
    if getattr(ansible_runner.get_ansible_host, "wsgistack", False):
        return
    original = ansible_runner.get_ansible_host

    def get_ansible_host(config, inventory, host, *args, **kwargs):
        hostvars = inventory["_meta"].get("hostvars", {}).get(host, {})
        if hostvars.get("ansible_connection") == "wsgistack_container":
            return testinfra.get_host(f"wsgistack-container://{hostvars.get('ansible_host', host)}")
        return original(config, inventory, host, *args, **kwargs)

    get_ansible_host.wsgistack = True
    ansible_runner.get_ansible_host = get_ansible_host


try:
    _register_container_backend()
except ImportError:  # unit tests run without testinfra's Docker backend
    pass


def scenario_dir() -> Path:
    return Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


def scenario_group_vars(group: str = "molecule") -> dict:
    """The role inputs declared in the scenario's molecule.yml (a deep copy to modify)."""
    config = yaml.safe_load((scenario_dir() / "molecule.yml").read_text())
    return copy.deepcopy(config["provisioner"]["inventory"]["group_vars"][group])


def scenario_playbook(playbook: str) -> Path:
    """A scenario's playbook, following provisioner.playbooks when the scenario borrows one."""
    own = scenario_dir() / playbook
    if own.exists():
        return own
    config = yaml.safe_load((scenario_dir() / "molecule.yml").read_text())
    borrowed = config.get("provisioner", {}).get("playbooks", {}).get(Path(playbook).stem)
    return (scenario_dir() / borrowed).resolve() if borrowed else own


def scenario_ansible_args() -> list[str]:
    """The scenario's provisioner.ansible_args, which Molecule adds to each of its playbook runs."""
    config = yaml.safe_load((scenario_dir() / "molecule.yml").read_text())
    return [str(arg) for arg in config.get("provisioner", {}).get("ansible_args", [])]


def run_playbook(playbook: str, extra_vars: dict | None = None, limit: str | None = None,
                 check: bool = False, verbose: bool | int = False,
                 inventories: list[str] = (), tags: str | None = None) -> subprocess.CompletedProcess:
    """Run a playbook of the scenario against its instances (and the hosts of `inventories`,
    added to the scenario's inventory), with the scenario's ansible_args as Molecule runs it,
    and return the result."""
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
           *[arg for inventory in inventories for arg in ("-i", inventory)],
           str(scenario_playbook(playbook)), *scenario_ansible_args()]
    if verbose:
        # True or 1: -v; 3: -vvv.
        cmd.append("-" + "v" * int(verbose))
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    if limit:
        cmd += ["--limit", limit]
    if tags:
        cmd += ["--tags", tags]
    if check:
        cmd += ["--check", "--diff"]
    # Long lines of a result stay on one line, as with the project's ansible.cfg.
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_YAML_LINE_WIDTH="no-break")
    # A run of ~100 inventory aliases (the site scenario's bad inputs) takes >900 s on a loaded runner.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)


def run_playbooks_at_once(runs: list[dict]) -> list[subprocess.CompletedProcess]:
    """Several run_playbook runs (each a dict of its arguments, e.g. different extra vars
    for different --limit hosts) side by side; their results in the same order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(len(runs), 1)) as pool:
        return list(pool.map(lambda run: run_playbook(**run), runs))


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def wait_for(predicate, timeout: float, interval: float = 0.5):
    """Poll predicate until it returns a truthy value or timeout seconds pass; return the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def tree_checksums(host, path: str) -> str:
    """Every entry below path on the host (type, owner, group, mode, link target) and the
    checksum of every regular file, to prove a failed run changed nothing. A path that does
    not exist reads as "absent" (a run that creates it is a change too)."""
    import shlex

    quoted = shlex.quote(path)
    return host.check_output(
        f"if [ -e {quoted} ] || [ -L {quoted} ]; then"
        f" find {quoted} -printf '%y %u:%g %m %p -> %l\\n' | LC_ALL=C sort;"
        f" find {quoted} -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum;"
        " else echo absent; fi"
    )


def inventory_host_vars(name: str) -> dict:
    """The variables the scenario's inventory gives an instance (its connection)."""
    def find(node):
        if isinstance(node, dict):
            hosts = node.get("hosts") or {}
            if isinstance(hosts, dict) and isinstance(hosts.get(name), dict):
                return hosts[name]
            for child in node.values():
                found = find(child)
                if found is not None:
                    return found
        return None

    return dict(find(yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())) or {})


def failure_messages(result: subprocess.CompletedProcess) -> dict[str, str]:
    """What each host's failed tasks printed (the `fatal:`/`failed:` lines and the indented
    result under them), by host."""
    import re

    messages: dict[str, list[str]] = {}
    current = None
    for line in output(result).splitlines():
        match = re.match(r"^(fatal|failed): \[([^\]]+)\]", line)
        if match:
            current = match.group(2)
            messages.setdefault(current, []).append(line)
        elif current and line.startswith(" "):
            messages[current].append(line)
        else:
            current = None
    return {host: "\n".join(lines) for host, lines in messages.items()}


def day_two_not_shown(shown: dict, before: dict, after: dict, back: dict) -> dict:
    """The inputs of `shown` ({input: (where, old text, new text)}) whose change did not show:
    `old` is not in `before[where]` and `back[where]` alone, or `new` is not in `after[where]` alone."""
    return {name: (where, old, new) for name, (where, old, new) in shown.items()
            if not (old in before[where] and new not in before[where] and new in after[where]
                    and old not in after[where] and old in back[where] and new not in back[where])}


def tls_compliance_failures(host, name: str, port: int = 443, ca_file: str | None = None) -> list[str]:
    """The instance's TLS server checked by sslyze from the controller against Mozilla's
    intermediate configuration, with `name` as SNI: the failed checks ("check: detail"),
    empty when compliant. `ca_file` adds a trusted root (Pebble's)."""
    import re

    address = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                              host.backend.host], capture_output=True, text=True, check=True).stdout.split()[0]
    scanner = os.environ.get("WSGISTACK_SSLYZE") or str(
        Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / ".cache" / "tls-scanner" / "bin" / "sslyze")
    cmd = [scanner, "--mozilla_config=intermediate", f"{name}:{port}{{{address}}}"]
    if ca_file:
        cmd.append(f"--certinfo_ca_file={ca_file}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    text = result.stdout + result.stderr
    assert "SCANS COMPLETED" in text and "COMPLIANCE AGAINST TLS CONFIGURATION" in text, text
    compliance = text.split("COMPLIANCE AGAINST TLS CONFIGURATION", 1)[1]
    failures = re.findall(r"^\s+\* (\w+: .*)$", compliance, re.M)
    assert failures or f"{name}:{port}: OK - Compliant" in compliance, text
    return failures


def journal(host, unit: str, lines: int = 60) -> str:
    return host.run(f"journalctl -u {unit} -n {lines} --no-pager").stdout


def unit_pids(host, unit: str) -> set[int]:
    """Every process of a running service: its main process and that one's children (a Celery
    worker's pool); empty when it does not run."""
    main = host.check_output(f"systemctl show -P MainPID {unit}")
    if main in ("", "0"):
        return set()
    children = host.run(f"ps -o pid= --ppid {main}").stdout.split()
    return {int(main), *(int(pid) for pid in children)}


def molecule_host_names(group: str = "molecule") -> list[str]:
    import testinfra.utils.ansible_runner

    return testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(group)


def molecule_hosts(group: str = "molecule") -> list:
    """testinfra hosts for every instance, for tests that run one playbook against all of them."""
    import testinfra

    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return [testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in molecule_host_names(group)]


def recap(result: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    import re

    counters = {}
    for match in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", result.stdout, re.M):
        counters[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return counters


def assert_recap(result: subprocess.CompletedProcess, hosts: list[str] | None = None, **expected: int) -> None:
    """Every host of `hosts` (default: every instance) and no other is in the PLAY RECAP, and
    each has the counters given, e.g. assert_recap(result, changed=0, failed=0). An empty or
    missing recap fails, so "nothing changed" is never concluded from a run that did nothing."""
    counters = recap(result)
    names = molecule_host_names() if hosts is None else hosts
    assert names, "no hosts to look for in the recap"
    assert sorted(counters) == sorted(names), output(result)
    for name, values in counters.items():
        for key, value in expected.items():
            assert values.get(key) == value, f"{name}: {key}={values.get(key)}, expected {value}\n{output(result)}"


def assert_refused_before_change(hosts, extra_vars: dict, message: str, variable: str,
                                 paths: list[str], state=lambda host: None) -> None:
    """A converge with bad inputs fails on every host, says `message` and names `variable`,
    and leaves the files below `paths` (and whatever `state` reports) as they were."""
    before = {h: ([tree_checksums(h, p) for p in paths], state(h)) for h in hosts}
    result = run_playbook("converge.yml", extra_vars=extra_vars)
    text = output(result)
    assert result.returncode != 0, text
    assert message in text, text
    assert variable in text, text
    counters = recap(result)
    assert sorted(counters) == sorted(molecule_host_names()), text
    assert all(c["changed"] == 0 and c["failed"] == 1 for c in counters.values()), text
    for h in hosts:
        assert ([tree_checksums(h, p) for p in paths], state(h)) == before[h]


def inventory_groups(name: str) -> list[str]:
    """The groups of the scenario's inventory that list the instance `name`."""
    found: list[str] = []

    def walk(group: str, node) -> None:
        if not isinstance(node, dict):
            return
        if name in (node.get("hosts") or {}):
            found.append(group)
        for child, below in (node.get("children") or {}).items():
            walk(child, below)

    # Molecule writes its groups at the top level, beside "all"; other inventories nest them.
    for group, node in (yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text()) or {}).items():
        walk(group, node)
    return [group for group in dict.fromkeys(found) if group not in ("all", "ungrouped")]


def refusal_battery(hosts, cases: dict[str, tuple[dict, str, str]], paths: list[str],
                    state=lambda host: None, playbook: str = "converge.yml") -> dict:
    """One run of `playbook` for many bad inputs at once: an inventory alias of the first
    instance per case (in the instance's groups, the case's values as its host vars), the run
    limited to the aliases. Gives {"problems": {case: why}, "changed": [instances whose files
    below `paths` or `state` changed], "output": the run's output}. A case is a problem unless its
    alias failed (once) without a change and its failure says the message and names the variable."""
    import re
    import tempfile

    target = hosts[0].backend.host
    connection = inventory_host_vars(target) | {"ansible_host": target}
    aliases = {case: "bad-" + re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-") for case in cases}
    assert len(set(aliases.values())) == len(aliases), aliases
    groups = inventory_groups(target)
    assert groups, f"{target} is in no group of the scenario's inventory"
    children = {group: {"hosts": dict.fromkeys(aliases.values())} for group in groups}
    children[groups[0]]["hosts"] = {aliases[case]: connection | values for case, (values, _, _) in cases.items()}
    before = {h.backend.host: ([tree_checksums(h, p) for p in paths], state(h)) for h in hosts}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="battery-") as inventory:
        yaml.safe_dump({"all": {"children": children}}, inventory)
        inventory.flush()
        result = run_playbook(playbook, inventories=[inventory.name], limit=",".join(aliases.values()))
    counters, messages = recap(result), failure_messages(result)
    problems = {}
    for case, (_, message, variable) in cases.items():
        alias = aliases[case]
        shown = messages.get(alias, "").replace("''", "'")
        counter = counters.get(alias, {})
        if counter.get("changed") != 0 or counter.get("failed") != 1 or message not in shown or variable not in shown:
            problems[case] = f"{counter}\n{shown[-1500:] or output(result)[-3000:]}"
    changed = [h.backend.host for h in hosts if ([tree_checksums(h, p) for p in paths], state(h)) != before[h.backend.host]]
    return {"problems": problems, "changed": changed, "output": output(result)}


def put_file(host, path: str, content: str, mode: str = "0644") -> None:
    """Write a file inside the instance (base64, so no quoting can break it)."""
    import base64

    encoded = base64.b64encode(content.encode()).decode()
    host.check_output(f"echo {encoded} | base64 -d > {path} && chmod {mode} {path}")


# A bounded request loop that runs inside the instance: N sequential requests, with an
# action (a shell command) fired once after `trigger_after` requests. Prints one JSON line:
# failures, statuses seen, and the set of response bodies' last field (worker pids).
LOAD_SCRIPT = r'''
import http.client, json, socket, ssl, subprocess, sys, time
host, port, tls, name, path, count, trigger_after, action, spread = sys.argv[1:10]
count, trigger_after, port, spread = int(count), int(trigger_after), int(port), float(spread)
triggered = None
context = ssl._create_unverified_context()


class SNIConnection(http.client.HTTPSConnection):
    """HTTPS to `host` with the site's name as SNI, as a browser resolving the name would."""

    def connect(self):
        sock = socket.create_connection((host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


failures, statuses, pids_before, pids_after = 0, {}, set(), set()
deadline = time.monotonic() + 120
for i in range(count):
    if time.monotonic() > deadline:
        break
    if i == trigger_after and action:
        subprocess.run(action, shell=True, check=True)
        triggered = time.monotonic()
    if triggered is not None and spread > 0:
        # The requests after the trigger are spread over at least `spread` seconds, so a
        # reload that takes its time is still seen by the last ones.
        due = triggered + spread * (i - trigger_after) / max(count - trigger_after, 1)
        time.sleep(max(0.0, due - time.monotonic()))
    try:
        # What the loop checks is the answer; latency is the benchmark's. On a loaded 2-core
        # runner a request that meets a worker still importing Django can wait >30 s.
        if tls == "1":
            conn = SNIConnection(name, port, timeout=60, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("GET", path, headers={"Host": name})
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status != 200:
            failures += 1
        else:
            (pids_before if i < trigger_after else pids_after).add(body.rsplit(":", 1)[-1])
    except Exception as exc:
        failures += 1
        statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
print(json.dumps({"requests": i + 1, "failures": failures, "statuses": statuses,
                  "pids_before": sorted(pids_before), "pids_after": sorted(pids_after)}))
'''


def request_loop(host, name: str, path: str = "/", count: int = 2000, trigger_after: int = 0,
                 action: str = "", port: int = 80, tls: bool = False, spread: float = 0.0) -> dict:
    """Run LOAD_SCRIPT inside the instance against 127.0.0.1 and return its report. With
    `spread`, the requests after the action take at least that many seconds."""
    import shlex

    put_file(host, "/tmp/wsgistack_load.py", LOAD_SCRIPT)
    args = ["127.0.0.1", str(port), "1" if tls else "0", name, path, str(count), str(trigger_after), action,
            str(spread)]
    out = host.check_output("python3 /tmp/wsgistack_load.py " + " ".join(shlex.quote(a) for a in args))
    return json.loads(out.strip().splitlines()[-1])


# --- HTTP checks run inside the instance with curl/openssl -----------------------------

def curl(host, args: str) -> str:
    return host.run(f"curl -sk --max-time 10 {args}").stdout


def status_of(host, args: str) -> str:
    return curl(host, f"-o /dev/null -w '%{{http_code}}' {args}")


def headers_of(host, args: str) -> str:
    return curl(host, f"-o /dev/null -D - {args}").lower()


def answer_of(host, args: str) -> tuple[str, str]:
    """Status and body of a curl request made inside the instance (status 000: nothing answered)."""
    body, _, status = curl(host, f"-w '\\n%{{http_code}}' {args}").rpartition("\n")
    return status, body


def site_get(host, name: str, path: str, extra: str = "") -> tuple[str, str]:
    """Status and body of an HTTPS request for the site `name` to the instance's own web server
    (127.0.0.1), with the name as Host and SNI, as a browser resolving it would send."""
    return answer_of(host, f"--resolve {name}:443:127.0.0.1 {extra} https://{name}{path}")


def site_headers(host, name: str, path: str) -> str:
    """The response headers (lower-cased) of site_get's request."""
    return headers_of(host, f"--resolve {name}:443:127.0.0.1 https://{name}{path}")


def site_get_encoded(host, name: str, path: str, encoding: str) -> tuple[str, str, str]:
    """Status, response headers (lower-cased) and decoded body of site_get's request from a
    client that accepts `encoding` alone (curl decodes gzip and br)."""
    args = f"--compressed -H 'Accept-Encoding: {encoding}' --resolve {name}:443:127.0.0.1 https://{name}{path}"
    body, _, status = curl(host, f"-D /tmp/wsgistack-headers -w '\\n%{{http_code}}' {args}").rpartition("\n")
    return status, host.check_output("cat /tmp/wsgistack-headers").lower(), body


def sent_as_stored(host, headers: str, form: str) -> bool:
    """Whether a response (site_get_encoded's headers) is the form compressed at deploy time,
    not one compressed on the fly (which has no length of its own): the form's encoding, and its
    length on disk."""
    import re

    encoding = "br" if form.endswith(".br") else "gzip"
    return (f"content-encoding: {encoding}" in headers
            and re.search(rf"^content-length: {host.file(form).size}\r?$", headers, re.M) is not None)


def assert_stored_gzip_form(host, url_args: str, body: str, cache_control: str) -> None:
    """A client that accepts gzip gets the form stored beside a static file (`body` once decoded,
    other content than the file's in the role scenarios' fixtures), with the file's type, its
    cache header and Vary."""
    sent = headers_of(host, f"-H 'Accept-Encoding: gzip' {url_args}")
    assert header_values(sent, "content-encoding") == ["gzip"], sent
    assert header_values(sent, "content-type") == ["text/css"], sent
    assert header_values(sent, "cache-control") == [cache_control], sent
    assert "accept-encoding" in ",".join(header_values(sent, "vary")), sent
    assert curl(host, f"--compressed -H 'Accept-Encoding: gzip' {url_args}") == body


def header_values(headers: str, name: str) -> list[str]:
    import re

    return re.findall(rf"^{name.lower()}: (.*?)\r?$", headers, re.M)


def tls_handshake(host, version_flag: str, server_name: str, port: int = 443) -> bool:
    """Whether the server completes a handshake at one TLS version. SECLEVEL=0 lets the client
    offer TLS 1.0/1.1, so a refusal of those is the server's."""
    cipher = "-cipher DEFAULT@SECLEVEL=0" if version_flag in ("-tls1", "-tls1_1") else ""
    result = host.run(
        f"echo | timeout 10 openssl s_client -connect 127.0.0.1:{port} -servername {server_name} {version_flag} {cipher}"
    )
    return result.rc == 0 and "Cipher is (NONE)" not in result.stdout and "BEGIN CERTIFICATE" in result.stdout


def assert_https_site(host, name: str, hsts: str = "max-age=63072000; includesubdomains") -> None:
    """The HTTPS behaviour every web stack of the collection owes its users."""
    https = f"--resolve {name}:443:127.0.0.1 https://{name}"
    redirect = curl(host, f"-o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Host: {name}' http://127.0.0.1/a/b?q=1")
    assert redirect == f"301 https://{name}/a/b?q=1"
    headers = headers_of(host, f"{https}/")
    assert header_values(headers, "strict-transport-security") == [hsts]
    assert header_values(headers, "x-content-type-options") == ["nosniff"]
    assert header_values(headers, "referrer-policy") == ["same-origin"]
    # The test apps send SAMEORIGIN; the site sends one consistent value.
    assert header_values(headers, "x-frame-options") == ["deny"]
    for flag, accepted in (("-tls1", False), ("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)):
        assert tls_handshake(host, flag, name) == accepted, flag


# --- certificates (Pebble is the ACME server in the tests) ------------------------------

def served_chain(host, name: str) -> str:
    """The certificates the web server on 443 sends for `name`, PEM, leaf first."""
    return host.check_output(
        f"echo | openssl s_client -connect 127.0.0.1:443 -servername {name} -showcerts 2>/dev/null"
        " | sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p'"
    )


def leaf_field(host, pem_file: str, option: str) -> str:
    return host.check_output(f"openssl x509 -in {pem_file} -noout {option}")


def save_served_chain(host, name: str) -> None:
    chain = served_chain(host, name)
    host.check_output(f"cat > /tmp/served.pem <<'EOF'\n{chain}\nEOF")
    host.check_output("openssl x509 -in /tmp/served.pem -out /tmp/leaf.pem")


def pebble_root(host) -> None:
    # The issuing root changes at each Pebble start: fetch it from the management port.
    host.check_output("curl -sf --cacert /etc/pebble/cert.pem https://localhost:15000/roots/0 -o /tmp/pebble-root.pem")


def restart_pebble(host) -> None:
    """Start Pebble again. It keeps accounts in memory, so certbot's stored account is gone with
    the old process: remove it, and certbot registers a new one."""
    host.check_output("systemctl start pebble && rm -rf /etc/letsencrypt/accounts/*")
    assert wait_for(lambda: host.run("curl -sf --cacert /etc/pebble/cert.pem https://localhost:14000/dir").rc == 0, 30)


def assert_served_certificate_from_pebble(host, name: str, domains: list[str]) -> None:
    """The certificate served for `name` verifies against Pebble's root and names `domains`."""
    pebble_root(host)
    save_served_chain(host, name)
    verify = host.run("openssl verify -CAfile /tmp/pebble-root.pem -untrusted /tmp/served.pem /tmp/leaf.pem")
    assert verify.rc == 0 and "/tmp/leaf.pem: OK" in verify.stdout, verify.stdout + verify.stderr
    san = set(leaf_field(host, "/tmp/leaf.pem", "-ext subjectAltName").replace(",", " ").split())
    assert {f"DNS:{domain}" for domain in domains} <= san, san
    status = curl(host, f"-o /dev/null -w '%{{http_code}}' --resolve {name}:443:127.0.0.1 "
                        f"--cacert /tmp/pebble-root.pem https://{name}/")
    assert status == "200"


def assert_forced_renewal_served_after_reload(host, cert_name: str, name: str, service: str) -> None:
    """`certbot renew --force-renewal`, run with the certbot.service environment the timer uses,
    gives a new serial that the web server serves while its main process stays (a reload)."""
    environment = host.check_output("systemctl show certbot.service -p Environment --value")
    assert "REQUESTS_CA_BUNDLE=" in environment
    save_served_chain(host, name)
    old_serial = leaf_field(host, "/tmp/leaf.pem", "-serial")
    main_pid = host.check_output(f"systemctl show -p MainPID --value {service}").strip()
    result = host.run(f"env {environment} certbot renew --force-renewal --no-random-sleep-on-renew --cert-name {cert_name}")
    assert result.rc == 0, result.stdout + result.stderr

    def new_serial():
        save_served_chain(host, name)
        serial = leaf_field(host, "/tmp/leaf.pem", "-serial")
        return serial if serial != old_serial else None

    assert wait_for(new_serial, timeout=15), f"{service} still serves the old certificate"
    assert host.check_output(f"systemctl show -p MainPID --value {service}").strip() == main_pid, (
        f"{service} was restarted instead of reloaded")


# --- requests that keep running while the controller changes the host ------------------

def start_request_loop(host, name: str, path: str = "/", port: int = 80, tls: bool = False,
                       batch: int = 100, loop: str = "load", pause: float = 0) -> None:
    """Run LOAD_SCRIPT in the instance batch after batch (a transient systemd unit), until
    stop_request_loop; for a change made from the controller, such as a converge, while
    requests keep coming. Each batch appends its report to /tmp/wsgistack_<loop>.jsonl; loops
    with different names run side by side. `pause` seconds between batches keep the loop from
    taking the CPU a converge on several instances needs."""
    import shlex

    put_file(host, "/tmp/wsgistack_load.py", LOAD_SCRIPT)
    args = ["127.0.0.1", str(port), "1" if tls else "0", name, path, str(batch), str(batch), "", "0"]
    command = "python3 /tmp/wsgistack_load.py " + " ".join(shlex.quote(a) for a in args)
    unit, files = f"wsgistack-{loop}", f"/tmp/wsgistack_{loop}"
    host.check_output(f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null;"
                      f" rm -f {files}.jsonl {files}.stop; true")
    body = f"while [ ! -e {files}.stop ]; do {command} >> {files}.jsonl || exit 1; sleep {pause}; done"
    host.check_output(f"systemd-run --unit {unit} --quiet sh -c {shlex.quote(body)}")
    assert wait_for(lambda: host.run(f"test -s {files}.jsonl").rc == 0, 30), f"the request loop {loop} did not start"


def stop_request_loop(host, loop: str = "load") -> dict:
    """Stop the loop of start_request_loop after its current batch and sum up its batches:
    requests, failures, statuses, and the worker pids each batch saw (`batches`, in order)."""
    unit, files = f"wsgistack-{loop}", f"/tmp/wsgistack_{loop}"
    host.check_output(f"touch {files}.stop")
    assert wait_for(lambda: host.run(f"systemctl is-active --quiet {unit}").rc != 0, 120), (
        f"the request loop {loop} did not stop")
    reports = [json.loads(line) for line in host.file(f"{files}.jsonl").content_string.splitlines()]
    statuses: dict = {}
    for report in reports:
        for key, count in report["statuses"].items():
            statuses[key] = statuses.get(key, 0) + count
    return {"requests": sum(r["requests"] for r in reports), "failures": sum(r["failures"] for r in reports),
            "statuses": statuses, "batches": [r["pids_before"] for r in reports]}


def assert_tls_compliant_with_pebble_root(host, name: str) -> None:
    """With Pebble's root trusted, sslyze finds the site compliant with Mozilla intermediate
    (protocols, ciphers, curves, certificate chain and lifetime)."""
    import tempfile

    pebble_root(host)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as root:
        root.write(host.file("/tmp/pebble-root.pem").content_string)
        root.flush()
        assert tls_compliance_failures(host, name, ca_file=root.name) == []
