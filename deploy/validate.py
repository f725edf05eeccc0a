#!/usr/bin/env python3
"""Checks deploy/ without a Docker daemon or a Kubernetes cluster.

Parses deploy/kubernetes/*.yaml, deploy/docker/compose.yml, the Dockerfile and the TOML
configuration they carry, and checks that they agree with each other (probes, ports,
selectors, grace period against drain_timeout, secrets and environment variables the
configuration names). With --binary, also runs `switchboard check` on the configuration
exactly as the Kubernetes pods and the compose nodes would see it.

Needs Python 3.11+ (tomllib) and PyYAML:
    target/tmp/oracle-venv/bin/python deploy/validate.py [--binary target/release/switchboard]
Prints "ok: ..." per passed check, "FAIL: ..." per failed one; exits 1 if any failed.
"""

import argparse
import base64
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

if sys.version_info < (3, 11):
    sys.exit("validate.py: needs Python 3.11 or later (tomllib)")
import tomllib

try:
    import yaml
except ImportError:
    sys.exit(
        "validate.py: needs PyYAML; run it with target/tmp/oracle-venv/bin/python "
        "(tests/oracles/requirements.txt) or `pip install PyYAML`"
    )

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "kubernetes"
DOCKER = DEPLOY / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
DUMMY = "validate-dummy-value"


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def ok(self, message):
        self.passed += 1
        print(f"ok: {message}", flush=True)

    def fail(self, message):
        self.failed.append(message)
        print(f"FAIL: {message}", file=sys.stderr, flush=True)

    def check(self, condition, message, why=""):
        if condition:
            self.ok(message)
        else:
            self.fail(f"{message}{': ' + why if why else ''}")
        return bool(condition)

    def skip(self, message):
        print(f"skip: {message}", flush=True)


def rel(path):
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)


def duration_seconds(text):
    """`"10s"`, `"250ms"`, `"1m 30s"` as Switchboard reads them (humantime units used in the docs)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)\s*(ms|s|m|h|d)\b", text)
    if not parts or re.sub(r"(\d+)\s*(ms|s|m|h|d)\b|\s", "", text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def port_of(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def secret_refs(value):
    """Every `{ env = "NAME" }` and `{ file = "path" }` in a parsed TOML document."""
    if isinstance(value, dict):
        if len(value) == 1 and set(value) <= {"env", "file"} and isinstance(next(iter(value.values())), str):
            yield next(iter(value.items()))
        else:
            for v in value.values():
                yield from secret_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from secret_refs(v)


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def config_flag(argv):
    if argv and "--config" in argv[:-1]:
        return argv[argv.index("--config") + 1]
    return None


class ConfigTree:
    """The configuration directory one node sees: relative path -> text."""

    def __init__(self, files, where):
        self.files = files
        self.where = where

    def parse(self, report, main_name):
        """Parses every TOML file; returns (main, {path: tenant}) or None."""
        parsed = {}
        for path, text in sorted(self.files.items()):
            if path.endswith(".toml"):
                try:
                    parsed[path] = tomllib.loads(text)
                    report.ok(f"{self.where}: {path} parses as TOML")
                except tomllib.TOMLDecodeError as e:
                    report.fail(f"{self.where}: {path} is not valid TOML: {e}")
        if not report.check(main_name in parsed, f"{self.where}: the main file {main_name} is there"):
            return None
        main = parsed[main_name]
        tenants_dir = posixpath.normpath(main.get("server", {}).get("tenants_dir", "tenants"))
        tenants = {p: t for p, t in parsed.items() if posixpath.dirname(p) == tenants_dir}
        report.check(tenants, f"{self.where}: at least one tenant file in {tenants_dir}/")
        return main, tenants

    def check_refs(self, report, documents, env_names):
        """Every env var the config names is set; every file it names is in the tree."""
        for path, doc in documents.items():
            for kind, name in secret_refs(doc):
                if kind == "env":
                    report.check(
                        name in env_names,
                        f"{self.where}: {path} reads ${name}, which the container sets",
                        f"set it in the container's environment (has: {', '.join(sorted(env_names)) or 'none'})",
                    )
                else:
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(path), name))
                    report.check(
                        target in self.files,
                        f"{self.where}: {path} reads file {name}, which is mounted ({target})",
                        "not in the mounted configuration directory",
                    )

    def write(self, directory):
        for path, text in self.files.items():
            out = Path(directory) / path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)


def check_server(report, where, main, ingest_port, admin_port):
    server = main.get("server", {})
    try:
        _, listen = port_of(server["listen"])
        report.check(listen == ingest_port, f"{where}: [server] listen is on the ingest port {ingest_port}", f"it is {listen}")
    except (KeyError, ValueError):
        report.fail(f"{where}: [server] listen is missing or not HOST:PORT")
    admin_host, admin = port_of(server.get("admin_listen", "127.0.0.1:8081"))
    report.check(admin == admin_port, f"{where}: [server] admin_listen is on the admin port {admin_port}", f"it is {admin}")
    report.check(
        admin_host not in ("127.0.0.1", "::1", "localhost"),
        f"{where}: [server] admin_listen is reachable from outside the container (probes, metrics)",
        f"{admin_host} is loopback",
    )
    url = main.get("store", {}).get("url", "sqlite://data/switchboard.db")
    report.check(
        url.startswith(("postgres://", "postgresql://")),
        f"{where}: [store] url is PostgreSQL, shared by every node",
        f"{url!r}: a SQLite file cannot be shared by several nodes",
    )
    try:
        return duration_seconds(server.get("drain_timeout", "10s"))
    except ValueError as e:
        report.fail(f"{where}: [server] drain_timeout: {e}")
        return 10


def run_check(report, binary, where, config, env):
    command = [str(binary), "check", "--config", str(config)]
    shown = " ".join(f"{k}=…" for k in sorted(env)) + " " + " ".join(command)
    try:
        done = subprocess.run(
            command,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        report.fail(f"{where}: could not run `{shown}`: {e}")
        return
    if done.returncode == 0:
        report.ok(f"{where}: `switchboard check` accepts it: {done.stdout.strip()}")
        return
    said = (done.stderr + done.stdout).strip()
    message = f"{where}: `switchboard check` refused it (exit {done.returncode}); ran: {shown}\n" + "\n".join(
        "    " + line for line in said.splitlines()
    )
    if "unsupported store url" in said or "unknown field `password`" in said:
        message += (
            "\n    note: this binary does not know the PostgreSQL store ([store] url = \"postgres://…\","
            " [store] password), which is being added; rebuild it once that lands. Not skipped: failed."
        )
    report.fail(message)


# --- Kubernetes -----------------------------------------------------------------------------


def load_k8s(report):
    docs = []
    for path in sorted(list(K8S.glob("*.yaml")) + list(K8S.glob("*.yml"))):
        try:
            found = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            report.fail(f"{rel(path)} is not valid YAML: {e}")
            continue
        bad = [d for d in found if not isinstance(d, dict) or "kind" not in d]
        if report.check(not bad and found, f"{rel(path)} parses ({', '.join(d.get('kind', '?') for d in found)})",
                        "every document must be a mapping with a kind"):
            docs.extend((path, d) for d in found)
    return docs


def check_kustomization(report, docs):
    kust = [(p, d) for p, d in docs if d["kind"] == "Kustomization"]
    if not report.check(len(kust) == 1, "deploy/kubernetes has one kustomization.yaml"):
        return
    resources = kust[0][1].get("resources", [])
    for r in resources:
        report.check((K8S / r).is_file(), f"kustomization resource {r} exists")
    manifests = {p.name for p, d in docs if d["kind"] != "Kustomization" and not p.name.endswith(".example.yaml")}
    missing = manifests - set(resources)
    report.check(not missing, "kustomization lists every manifest", f"not listed: {', '.join(sorted(missing))}")
    examples = {p.name for p, _ in docs if p.name.endswith(".example.yaml")} & set(resources)
    report.check(not examples, "kustomization does not install the *.example.yaml placeholders", ", ".join(examples))
    kubectl = shutil.which("kubectl")
    if not kubectl:
        report.skip("kubectl is not installed: `kubectl kustomize deploy/kubernetes` was not run")
        return
    done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    if not report.check(done.returncode == 0, "`kubectl kustomize deploy/kubernetes` renders", done.stderr.strip()):
        return
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout) if d)
    report.ok(f"kustomize output: {', '.join(kinds)}")


def check_k8s(report, docs, binary):
    by_kind = {}
    for _, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    named = lambda kind, name: next((d for d in by_kind.get(kind, []) if d["metadata"]["name"] == name), None)

    deployments = by_kind.get("Deployment", [])
    if not report.check(len(deployments) == 1, "one Deployment"):
        return
    dep = deployments[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    replicas = spec.get("replicas", 1)
    report.check(replicas >= 2, f"Deployment runs {replicas} replicas (>= 2)")
    report.check(selects(spec["selector"].get("matchLabels"), labels), "Deployment selector matches its pod labels")
    containers = pod.get("containers", [])
    c = next((c for c in containers if c["name"] == "switchboard"), containers[0] if containers else None)
    if not report.check(c is not None, "Deployment has a switchboard container"):
        return
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    report.check({"ingest", "admin"} <= set(ports), "container names its ports ingest and admin", str(ports))
    ingest_port, admin_port = ports.get("ingest", 8080), ports.get("admin", 8081)
    resolve = lambda port: ports.get(port) if isinstance(port, str) else port

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        report.check(
            get.get("path") == path and resolve(get.get("port")) == admin_port,
            f"{probe} is GET {path} on the admin port",
            f"found {get or 'none'}",
        )
    requests = c.get("resources", {}).get("requests", {})
    report.check({"cpu", "memory"} <= set(requests), "resources.requests sets cpu and memory", str(requests))
    report.check("memory" in c.get("resources", {}).get("limits", {}), "resources.limits sets memory")

    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    report.check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "runAsNonRoot")
    report.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    report.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem: true")
    report.check("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities drop ALL")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    report.check(seccomp == "RuntimeDefault", "seccompProfile RuntimeDefault", f"found {seccomp}")

    # The configuration directory as the pod sees it, from the volume mounted where --config points.
    config_path = config_flag(c.get("args", [])) or config_flag(c.get("command", []))
    if not report.check(config_path, "container passes --config"):
        return
    config_dir, main_name = posixpath.split(config_path)
    mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == config_dir), None)
    if not report.check(mount, f"a volume is mounted at {config_dir}"):
        return
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), None)
    if not report.check(volume, f"volume {mount['name']} is defined"):
        return
    example_secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}

    def secret_value(name, key):
        s = example_secrets.get(name)
        if s is None:
            return None
        if key in s.get("stringData", {}):
            return str(s["stringData"][key])
        if key in s.get("data", {}):
            return base64.b64decode(s["data"][key]).decode()
        return None

    files, mounted_keys = {}, set()
    sources = volume.get("projected", {}).get("sources") or [{k: volume[k]} for k in ("configMap", "secret") if k in volume]
    for source in sources:
        if "configMap" in source:
            ref = source["configMap"]
            cm = named("ConfigMap", ref["name"])
            if not report.check(cm, f"ConfigMap {ref['name']} is among the manifests"):
                continue
            items = ref.get("items") or [{"key": k, "path": k} for k in cm.get("data", {})]
            for item in items:
                if report.check(item["key"] in cm.get("data", {}), f"ConfigMap key {item['key']} exists"):
                    files[item["path"]] = cm["data"][item["key"]]
                    mounted_keys.add((ref["name"], item["key"]))
        elif "secret" in source:
            ref = source["secret"]
            name = ref.get("secretName", ref.get("name"))
            for item in ref.get("items", []):
                value = secret_value(name, item["key"])
                if report.check(value is not None, f"Secret {name} key {item['key']} is in secret.example.yaml"):
                    files[item["path"]] = value
    for cm in by_kind.get("ConfigMap", []):
        for key in cm.get("data", {}):
            mounted = report.check((cm["metadata"]["name"], key) in mounted_keys, f"ConfigMap key {key} is mounted",
                                   "add an item for it to the Deployment's config volume")
            if not mounted and key.endswith(".toml"):
                try:
                    tomllib.loads(cm["data"][key])
                except tomllib.TOMLDecodeError as e:
                    report.fail(f"ConfigMap key {key} is not valid TOML: {e}")

    env = {}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            value = secret_value(ref["name"], ref["key"])
            report.check(value is not None, f"env {e['name']} comes from Secret {ref['name']} key {ref['key']} (in secret.example.yaml)")
            env[e["name"]] = value or DUMMY
        else:
            env[e["name"]] = str(e.get("value", DUMMY))

    tree = ConfigTree(files, "kubernetes")
    parsed = tree.parse(report, main_name)
    if parsed:
        main, tenants = parsed
        tree.check_refs(report, {main_name: main, **tenants}, set(env))
        drain = check_server(report, "kubernetes", main, ingest_port, admin_port)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        report.check(
            grace > drain + pause,
            f"terminationGracePeriodSeconds {grace} > drain_timeout {drain:g}s + preStop pause {pause}s",
        )

    # Services and the PDB select these pods; the admin port is never public.
    services = by_kind.get("Service", [])
    for svc in services:
        name, sspec = svc["metadata"]["name"], svc["spec"]
        report.check(selects(sspec.get("selector"), labels), f"Service {name} selects the Deployment's pods")
        targets = {resolve(p.get("targetPort", p["port"])) for p in sspec.get("ports", [])}
        report.check(targets <= set(ports.values()), f"Service {name} targets container ports {sorted(targets)}")
        if admin_port in targets:
            report.check(sspec.get("type", "ClusterIP") == "ClusterIP", f"Service {name} (admin port) is ClusterIP, not public")
    all_targets = {resolve(p.get("targetPort", p["port"])) for s in services for p in s["spec"].get("ports", [])}
    report.check(ingest_port in all_targets, "a Service exposes the ingest port")
    report.check(
        not any(admin_port in {resolve(p.get("targetPort", p["port"])) for p in s["spec"]["ports"]}
                and ingest_port in {resolve(p.get("targetPort", p["port"])) for p in s["spec"]["ports"]} for s in services),
        "the admin port has its own Service, apart from ingest",
    )
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if report.check(len(pdbs) == 1, "one PodDisruptionBudget"):
        pspec = pdbs[0]["spec"]
        report.check(selects(pspec.get("selector", {}).get("matchLabels"), labels), "PodDisruptionBudget selects the Deployment's pods")
        report.check(pspec.get("minAvailable") == 1, "PodDisruptionBudget minAvailable: 1", str(pspec))
        report.check(pspec.get("minAvailable", 0) < replicas, "PodDisruptionBudget leaves room to evict one pod")

    if binary and parsed:
        with tempfile.TemporaryDirectory(prefix="switchboard-k8s-") as tmp:
            tree.write(tmp)
            run_check(report, binary, "kubernetes", Path(tmp) / main_name, env)
    return ingest_port, admin_port


# --- Compose and Dockerfile --------------------------------------------------------------------


def interpolate(value):
    """Compose's ${VAR:-default} -> default; ${VAR} and ${VAR:?err} -> a dummy value."""
    def one(m):
        op, default = m.group(2), m.group(3)
        return default if op in (":-", "-") else DUMMY
    return re.sub(r"\$\{(\w+)(:?[-?])?([^}]*)\}", one, str(value))


def as_env(environment):
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, DUMMY) for item in environment)
    return {k: ("" if v is None else str(v)) for k, v in (environment or {}).items()}


def short_port(entry):
    """(host_ip, published, target) of a compose port entry."""
    if isinstance(entry, dict):
        return entry.get("host_ip", ""), str(entry.get("published", "")), int(entry["target"])
    parts = str(entry).split("/")[0].split(":")
    target = int(parts[-1])
    return (parts[0] if len(parts) == 3 else ""), (parts[-2] if len(parts) > 1 else ""), target


def check_compose(report, binary, ingest_port, admin_port):
    try:
        compose = yaml.safe_load(COMPOSE.read_text())
    except (OSError, yaml.YAMLError) as e:
        report.fail(f"{rel(COMPOSE)} does not parse: {e}")
        return
    report.ok(f"{rel(COMPOSE)} parses")
    services = compose.get("services", {})

    pg = services.get("postgres", {})
    report.check(str(pg.get("image", "")).startswith("postgres:16"), "compose: postgres service runs postgres:16")
    report.check("pg_isready" in " ".join(map(str, pg.get("healthcheck", {}).get("test", []))),
                 "compose: postgres has a pg_isready healthcheck")
    report.check(pg.get("volumes"), "compose: postgres keeps its data in a volume")

    def uses_image(s):
        build = s.get("build", {})
        dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
        context = COMPOSE.parent / (build.get("context", ".") if isinstance(build, dict) else build)
        return (context / dockerfile).resolve() == DOCKERFILE.resolve() if dockerfile else False

    command = lambda s: [str(x) for x in (s.get("command") or [])]
    sinks = [n for n, s in services.items() if uses_image(s) and command(s)[:1] == ["sink"]]
    nodes = [n for n, s in services.items() if uses_image(s) and command(s)[:1] != ["sink"]]
    report.check(len(nodes) >= 2, f"compose: {len(nodes)} switchboard nodes built from deploy/docker/Dockerfile (>= 2)", str(nodes))
    report.check(sinks, f"compose: a sink service ({', '.join(sinks) or 'none'})")
    for sink in sinks:
        listen = command(services[sink])
        addr = listen[listen.index("--listen") + 1] if "--listen" in listen[:-1] else "127.0.0.1:9000"
        report.check(not addr.startswith("127."), f"compose: {sink} listens on the compose network ({addr})")

    published, node_envs, config_dirs = [], {}, set()
    for name in nodes:
        s = services[name]
        dep = s.get("depends_on", {})
        condition = dep.get("postgres", {}).get("condition") if isinstance(dep, dict) else None
        report.check(condition == "service_healthy", f"compose: {name} depends on postgres being healthy", f"found {dep}")
        ports = [short_port(p) for p in s.get("ports", [])]
        published += [p[1] for p in ports if p[1]]
        report.check(any(t == ingest_port and pub for _, pub, t in ports), f"compose: {name} publishes the ingest port {ingest_port}")
        for host_ip, pub, t in ports:
            if t == admin_port:
                report.check(host_ip in ("127.0.0.1", "::1"), f"compose: {name} publishes the admin port on loopback only", f"{host_ip or '0.0.0.0'}:{pub}")
        grace = s.get("stop_grace_period")
        node_envs[name] = {k: interpolate(v) for k, v in as_env(s.get("environment")).items()}
        config_path = config_flag(command(s)) or "/etc/switchboard/switchboard.toml"
        for v in s.get("volumes", []):
            source, _, rest = str(v).partition(":")
            if rest.split(":")[0] == posixpath.dirname(config_path):
                config_dirs.add(((COMPOSE.parent / source).resolve(), posixpath.basename(config_path)))
        report.check(grace, f"compose: {name} sets stop_grace_period ({grace})")
    report.check(len(published) == len(set(published)), "compose: published host ports are distinct", str(published))
    if not report.check(len(config_dirs) == 1, "compose: every node mounts the same configuration directory", str(config_dirs)):
        return
    config_dir, main_name = config_dirs.pop()
    files = {str(p.relative_to(config_dir)): p.read_text() for p in config_dir.rglob("*") if p.is_file()}
    tree = ConfigTree(files, "compose")
    parsed = tree.parse(report, main_name)
    if not parsed:
        return
    main, tenants = parsed
    env = node_envs[nodes[0]] if nodes else {}
    tree.check_refs(report, {main_name: main, **tenants}, set(env))
    drain = check_server(report, "compose", main, ingest_port, admin_port)
    for name in nodes:
        grace = services[name].get("stop_grace_period", "10s")
        report.check(duration_seconds(grace) > drain, f"compose: {name} stop_grace_period {grace} > drain_timeout {drain:g}s")
    store_host = urlsplit(main.get("store", {}).get("url", "")).hostname
    report.check(store_host in services, f"compose: the store url's host {store_host!r} is a compose service")
    hosts = {urlsplit(d.get("url", "")).hostname for t in tenants.values() for d in t.get("destination", [])}
    report.check(hosts and hosts <= set(sinks), f"compose: destinations point at the sink ({', '.join(sorted(map(str, hosts)))})")
    report.check(main.get("server", {}).get("allow_private_destinations") is True,
                 "compose: allow_private_destinations = true (the sink has a private address)")
    if binary:
        run_check(report, binary, "compose", config_dir / main_name, env)


def check_dockerfile(report, ingest_port, admin_port):
    try:
        text = DOCKERFILE.read_text()
    except OSError as e:
        report.fail(f"cannot read {rel(DOCKERFILE)}: {e}")
        return
    logical = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    instructions = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l.strip() else "")
                    for l in (x.strip() for x in logical.splitlines()) if l]
    froms = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    report.check(len(froms) >= 2, f"Dockerfile: multi-stage ({len(froms)} FROM)")
    first = instructions[froms[0]][1] if froms else ""
    report.check(first.startswith("rust:"), f"Dockerfile: builds in a rust image ({first})")
    final = instructions[froms[-1]:] if froms else []
    users = [arg.strip() for op, arg in final if op == "USER"]
    report.check(users and users[-1].split(":")[0] not in ("root", "0"), f"Dockerfile: final stage runs as non-root USER {users[-1] if users else '(none)'}")
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    report.check("cargo build --release --locked" in runs, "Dockerfile: cargo build --release --locked")
    report.check(any(op == "COPY" and "--from=" in arg and arg.rstrip().endswith("/usr/local/bin/switchboard") for op, arg in final),
                 "Dockerfile: copies the binary to /usr/local/bin/switchboard")
    exposed = {int(p.split("/")[0]) for op, arg in final if op == "EXPOSE" for p in arg.split()}
    report.check({ingest_port, admin_port} <= exposed, f"Dockerfile: EXPOSE {ingest_port} and {admin_port}", str(exposed))
    report.check(("STOPSIGNAL", "SIGTERM") in final, "Dockerfile: STOPSIGNAL SIGTERM")
    report.check(any(op == "ENTRYPOINT" and "/usr/local/bin/switchboard" in arg for op, arg in final), "Dockerfile: ENTRYPOINT is the binary")
    ignore = ROOT / ".dockerignore"
    lines = ignore.read_text().split() if ignore.is_file() else []
    excluded = "*" in lines and "!target" not in lines or any(l.strip("/") in ("target", "**/target") for l in lines)
    report.check(excluded, "/.dockerignore keeps target/ out of the build context")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, help="also run `BINARY check` on the Kubernetes and compose configurations")
    args = parser.parse_args()
    report = Report()
    binary = None
    if args.binary:
        binary = args.binary.resolve()
        if not report.check(binary.is_file() and os.access(binary, os.X_OK), f"--binary {binary} is executable"):
            binary = None
    docs = load_k8s(report)
    check_kustomization(report, docs)
    ports = check_k8s(report, docs, binary) or (8080, 8081)
    check_compose(report, binary, *ports)
    check_dockerfile(report, *ports)
    if args.binary is None:
        report.skip("`switchboard check` on the configurations: pass --binary target/release/switchboard")
    if report.failed:
        print(f"\n{len(report.failed)} failed, {report.passed} passed", file=sys.stderr)
        return 1
    print(f"\nall {report.passed} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
