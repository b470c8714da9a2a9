#!/usr/bin/env python3
"""Checks the deployment examples against each other and against the real binary.

    python3 deploy/check.py PATH/TO/sse-edge

Parses every example (the Dockerfile's instructions, .dockerignore, docker-compose.yml,
the Kubernetes YAML documents, the systemd unit, the ECS task definition), cross-checks what
must agree between an example and the sse-edge config it runs (probe and health check ports
are the admin listener's, published and Service ports are listeners bound beyond loopback,
stop timeouts exceed shutdown_grace_s, open-file limits exceed 2 x max_connections, every
${VAR} a config uses is provided, the origin address is where the app listens), then runs
`sse-edge check --config` on every config file with the environment its example provides.
Prints one line per check, then `N passed, M failed`; exits 1 when anything failed.

Needs Python 3.11+ (tomllib) and PyYAML, which it installs quietly into a cache folder when
it is missing. `openssl` makes throwaway certificates for configs that load [tls] files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent

# Sample values for ${VAR}s that an example leaves to the operator (a Secret, an ECS secret,
# the image's environment): `sse-edge check` needs something that parses.
SAMPLES = {"UPSTREAM_URL": "http://127.0.0.1:9000"}
PLACEHOLDER = "check-placeholder"

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_yaml_module():
    try:
        import yaml  # type: ignore

        return yaml
    except ImportError:
        pass
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sse-edge-deploy-check"
    sys.path.insert(0, str(cache))
    try:
        import yaml  # type: ignore

        return yaml
    except ImportError:
        pass
    print(f"(installing PyYAML into {cache})")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(cache), "pyyaml"],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        sys.exit(f"check.py: PyYAML is missing and `pip install pyyaml` failed:\n{done.stderr}")
    import importlib

    importlib.invalidate_caches()
    import yaml  # type: ignore

    return yaml


yaml = load_yaml_module()


# ---------------------------------------------------------------------------------------------
# Results


class Problem(Exception):
    """A check failed; the message says what to fix."""


class Skip(Exception):
    """A check cannot run here; not a failure."""


RESULTS: list[tuple[str, str, str]] = []  # (status, name, message)


def check(name: str, fn: Callable[[], str | None]) -> None:
    try:
        note = fn()
    except Problem as error:
        RESULTS.append(("FAIL", name, str(error)))
        print(f"FAIL  {name}\n      {str(error).replace(chr(10), chr(10) + '      ')}")
        return
    except Skip as error:
        RESULTS.append(("SKIP", name, str(error)))
        print(f"SKIP  {name}: {error}")
        return
    except Exception as error:  # a crash in a check is a failure, with its cause
        RESULTS.append(("FAIL", name, f"{type(error).__name__}: {error}"))
        print(f"FAIL  {name}\n      {type(error).__name__}: {error}")
        return
    RESULTS.append(("PASS", name, note or ""))
    print(f"PASS  {name}" + (f" ({note})" if note else ""))


def need(condition: Any, message: str) -> None:
    if not condition:
        raise Problem(message)


def problems_to_error(problems: list[str]) -> None:
    if problems:
        raise Problem("\n".join(problems))


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# sse-edge configs


class ProxyConfig:
    """One sse-edge config file, read enough to cross-check the examples against it."""

    def __init__(self, text: str, origin: str, folder: Path):
        self.text = text
        self.origin = origin  # where it came from, for messages
        self.folder = folder  # relative paths in it are taken from here
        try:
            self.data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise Problem(f"{origin}: not TOML: {error}")
        self.listen = self.data.get("listen", {})
        self.sse = self.data.get("sse", {})

    @classmethod
    def file(cls, path: Path) -> "ProxyConfig":
        need(path.is_file(), f"{rel(path)}: no such file")
        return cls(path.read_text(), rel(path), path.parent)

    def variables(self) -> set[str]:
        return set(ENV_REF.findall(self.text))

    def listener(self, name: str) -> tuple[str, int] | None:
        value = self.listen.get(name)
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        return host.strip("[]"), int(port)

    def port(self, name: str) -> int | None:
        found = self.listener(name)
        return found[1] if found else None

    def listener_ports(self) -> dict[int, str]:
        return {p: n for n in ("http", "https", "admin") if (p := self.port(n)) is not None}

    def grace(self) -> int:
        return int(self.listen.get("shutdown_grace_s", 10))

    def max_connections(self) -> int:
        return int(self.listen.get("max_connections", 10000))

    def upstream(self, env: dict[str, str] | None = None) -> tuple[str, str, int]:
        url = self.data.get("upstream", {}).get("url", "")
        if env is not None:
            url = ENV_REF.sub(lambda m: env.get(m.group(1), m.group(0)), url)
        unset = ENV_REF.findall(url)
        need(not unset, f"{self.origin}: [upstream] url {url!r} needs ${{{unset[0] if unset else ''}}}, "
             "which its example does not provide")
        match = re.match(r"^(https?)://(\[[^\]]+\]|[^/:]+)(?::(\d+))?", url)
        need(match, f"{self.origin}: [upstream] url {url!r} is not http(s)://host[:port]")
        scheme, host, port = match.group(1), match.group(2).strip("[]"), match.group(3)
        return scheme, host, int(port) if port else (443 if scheme == "https" else 80)


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def needs_reach(config: ProxyConfig, port: int, who: str) -> str | None:
    """A problem when `port` is not a listener reachable from outside the container."""
    for name in ("http", "https", "admin"):
        found = config.listener(name)
        if found and found[1] == port:
            if found[0] in LOOPBACK:
                return (f"{who} reaches port {port}, but {config.origin} binds [listen] {name} "
                        f"to {found[0]}: only the container itself can connect; use 0.0.0.0")
            return None
    return f"{who} uses port {port}, which is no listener in {config.origin} ({config.listener_ports() or 'none'})"


def nofile_problem(config: ProxyConfig, limit: int, where: str) -> str | None:
    wanted = 2 * config.max_connections() + 1024
    if limit < wanted:
        return (f"{where}: open-file limit {limit} is below 2 x max_connections + 1024 = {wanted} "
                f"({config.origin}): each client connection and each origin connection is a descriptor")
    return None


def make_certs(folder: Path, config: ProxyConfig) -> list[str]:
    """Writes a throwaway self-signed pair where [tls] points, under `folder`."""
    tls = config.data.get("tls", {})
    made = []
    cert, key = tls.get("cert"), tls.get("key")
    if not cert or not key:
        return made
    if Path(cert).is_absolute() or Path(key).is_absolute():
        raise Problem(f"{config.origin}: [tls] uses absolute paths; use paths relative to the "
                      "config file so they follow its mount (and so this check can supply a pair)")
    if not shutil.which("openssl"):
        raise Skip("openssl is not installed: cannot make a throwaway certificate")
    (folder / cert).parent.mkdir(parents=True, exist_ok=True)
    (folder / key).parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(folder / key),
         "-out", str(folder / cert)],
        capture_output=True, text=True,
    )
    need(done.returncode == 0, f"openssl failed: {done.stderr}")
    return [cert, key]


def run_sse_edge_check(binary: Path, config: ProxyConfig, env: dict[str, str], name: str) -> str:
    """`sse-edge check` on a copy of the config (with throwaway certs where [tls] points)."""
    missing = sorted(config.variables() - env.keys())
    need(not missing, f"{config.origin}: uses ${{{'}, ${'.join(missing)}}} that its example does not provide")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        path = folder / name
        path.write_text(config.text)
        notes = []
        https = config.listener("https") is not None
        tls = config.data.get("tls", {})
        if https and tls:
            present = all((config.folder / tls[k]).exists() for k in ("cert", "key") if k in tls)
            if present:
                for k in ("cert", "key"):
                    target = folder / tls[k]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(config.folder / tls[k], target)
            else:
                made = make_certs(folder, config)
                notes.append(f"throwaway certificate at {', '.join(made)}")
        clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        clean.update(env)
        done = subprocess.run([str(binary), "check", "--config", str(path)],
                              capture_output=True, text=True, env=clean, timeout=60)
        output = (done.stdout + done.stderr).replace(str(path), config.origin).strip()
        if done.returncode != 0:
            raise Problem(f"sse-edge check failed:\n{output}")
        return "; ".join([output.splitlines()[-1] if output else "ok", *notes])


CHECKED: dict[str, str] = {}  # config text digest + env -> result, so shared configs run once


def sse_edge_check(binary: Path, config: ProxyConfig, env: dict[str, str], label: str) -> None:
    """Registers the `sse-edge check` run for one config with its example's environment."""
    wanted = {k: env[k] for k in sorted(config.variables()) if k in env}
    key = hashlib.sha256((config.text + json.dumps(wanted, sort_keys=True)).encode()).hexdigest()
    if key in CHECKED:
        return
    CHECKED[key] = label

    def run() -> str:
        return run_sse_edge_check(binary, config, env, Path(config.origin).name or "proxy.toml")

    check(f"sse-edge check: {label}", run)


# ---------------------------------------------------------------------------------------------
# Dockerfile


class Dockerfile:
    def __init__(self, path: Path):
        self.path = path
        self.args: dict[str, str] = {}  # ARG defaults before the first FROM
        self.stages: list[dict[str, Any]] = []
        pending = ""
        for raw in path.read_text().splitlines():
            if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
                continue
            if pending and raw.lstrip().startswith("#"):
                continue
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            line = (pending + raw).strip()
            pending = ""
            keyword, _, rest = line.partition(" ")
            keyword, rest = keyword.upper(), rest.strip()
            if keyword == "FROM":
                words = rest.split()
                name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
                self.stages.append({"from": self.expand(words[0]), "name": name, "items": [],
                                    "args": {}})
            elif not self.stages:
                need(keyword == "ARG", f"Dockerfile: {keyword} before the first FROM")
                name, _, value = rest.partition("=")
                self.args[name] = value
            else:
                stage = self.stages[-1]
                if keyword == "ARG" and "=" in rest:
                    name, _, value = rest.partition("=")
                    stage["args"][name] = value
                stage["items"].append((keyword, rest))

    def expand(self, text: str, extra: dict[str, str] | None = None) -> str:
        values = {**self.args, **(extra or {})}
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m.group(1), m.group(0)), text)

    def runtime(self) -> dict[str, Any]:
        return self.stages[-1]

    def items(self, stage: dict[str, Any], keyword: str) -> list[str]:
        return [rest for k, rest in stage["items"] if k == keyword]

    def copies(self, stage: dict[str, Any]) -> list[tuple[str | None, list[str], str]]:
        """(from stage or None, sources, destination) with flags dropped and ARGs expanded."""
        found = []
        for rest in self.items(stage, "COPY"):
            words = shlex.split(rest)
            source = None
            plain = []
            for word in words:
                if word.startswith("--from="):
                    source = word.split("=", 1)[1]
                elif not word.startswith("--"):
                    plain.append(self.expand(word, stage["args"]))
            found.append((source, plain[:-1], plain[-1]))
        return found

    @staticmethod
    def exec_form(rest: str) -> list[str] | None:
        rest = rest.strip()
        if rest.startswith("["):
            return json.loads(rest)
        return None


def dockerfile_config(docker: Dockerfile) -> tuple[Path, str]:
    """The config the image ships: (file in the repo, path in the image)."""
    for source, sources, dest in docker.copies(docker.runtime()):
        if source is None and dest.endswith(".toml"):
            return REPO / sources[0], dest
    raise Problem("Dockerfile: the runtime stage copies no .toml configuration")


def image_config_path(docker: Dockerfile) -> str:
    """The path the image's CMD passes to --config."""
    cmd = Dockerfile.exec_form(docker.items(docker.runtime(), "CMD")[-1])
    need(cmd and "--config" in cmd, "Dockerfile: CMD should be exec form with --config PATH")
    return cmd[cmd.index("--config") + 1]


def healthz_call(command: list[str]) -> tuple[int, str] | None:
    """(port, path) when `command` runs the health check script."""
    words = [w for w in command if w not in ("CMD", "CMD-SHELL")]
    if len(words) == 1:
        words = shlex.split(words[0])
    for index, word in enumerate(words):
        if word.endswith("sse-edge-healthz") or word.endswith("healthz.sh"):
            port = int(words[index + 1]) if len(words) > index + 1 else 9901
            path = words[index + 2] if len(words) > index + 2 else "/healthz"
            return port, path
    return None


def dockerignore_included(patterns: list[tuple[bool, str]], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def matches(pattern: str, candidate: str) -> bool:
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        return re.fullmatch(regex, candidate) is not None

    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, pattern in patterns:
        pattern = os.path.normpath(pattern.strip("/"))
        if any(matches(pattern, p) for p in prefixes):
            included = negate
    return included


def check_dockerfile(binary: Path) -> tuple[Dockerfile, ProxyConfig] | tuple[None, None]:
    path = REPO / "Dockerfile"
    holder: dict[str, Any] = {}

    def parse() -> str:
        need(path.is_file(), "no Dockerfile at the repository root")
        docker = Dockerfile(path)
        holder["docker"] = docker
        need(len(docker.stages) >= 2, f"Dockerfile: {len(docker.stages)} FROM; a build stage and a "
             "runtime stage are expected")
        return f"{len(docker.stages)} stages: " + ", ".join(s["from"] for s in docker.stages)

    check("Dockerfile: parses, multi-stage", parse)
    docker = holder.get("docker")
    if docker is None or len(docker.stages) < 2:
        return None, None
    build, runtime = docker.stages[0], docker.runtime()

    def build_stage() -> str:
        image = build["from"]
        match = re.match(r"rust:(\d+)\.(\d+)(?:\.\d+)?-(?:slim-)?([a-z]+)$", image)
        need(match, f"Dockerfile: the build stage should be FROM rust:X.Y-[slim-]DEBIAN, found {image}")
        cargo = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
        floor = tuple(int(x) for x in cargo.get("rust-version", "1.85").split(".")[:2])
        have = (int(match.group(1)), int(match.group(2)))
        need(have >= floor, f"Dockerfile: rust {have[0]}.{have[1]} is older than Cargo.toml's "
             f"rust-version {cargo.get('rust-version')} (edition {cargo.get('edition')})")
        runs = " ".join(docker.items(build, "RUN"))
        need(re.search(r"cargo build\b[^&;]*--release", runs) and "--locked" in runs,
             "Dockerfile: the build stage should run `cargo build --release --locked`")
        debian = match.group(3)
        need(debian in runtime["from"], f"Dockerfile: builder is Debian {debian} but the runtime is "
             f"{runtime['from']}: the binary needs the same glibc (same Debian release)")
        need(not runtime["from"].startswith("rust:"), "Dockerfile: the runtime stage is the rust image")
        return f"{image} -> {runtime['from']}, cargo build --release --locked"

    check("Dockerfile: build stage (rust >= rust-version, --locked, same Debian as runtime)", build_stage)

    def non_root() -> str:
        users = docker.items(runtime, "USER")
        need(users, "Dockerfile: the runtime stage has no USER (it would run as root)")
        user = users[-1].split(":")[0]
        need(user.isdigit(), f"Dockerfile: USER {users[-1]}: use a numeric uid so Kubernetes' "
             "runAsNonRoot can verify it")
        need(int(user) != 0, "Dockerfile: USER 0 is root")
        return f"USER {users[-1]}"

    check("Dockerfile: runtime stage runs as a numeric non-root user", non_root)

    config_holder: dict[str, ProxyConfig] = {}

    def runtime_stage() -> str:
        problems = []
        copies = docker.copies(runtime)
        for source, sources, dest in copies:
            if source is None:
                for s in sources:
                    if not (REPO / s).exists():
                        problems.append(f"COPY {s}: not in the repository")
            elif source not in {s["name"] for s in docker.stages[:-1]}:
                problems.append(f"COPY --from={source}: no such stage")
        entry = Dockerfile.exec_form((docker.items(runtime, "ENTRYPOINT") or ["null"])[-1])
        binaries = [d for s, _, d in copies if s is not None]
        if not entry or entry[0] not in binaries:
            problems.append(f"ENTRYPOINT {entry} is not the binary copied from the build stage ({binaries})")
        config_file, config_dest = dockerfile_config(docker)
        if image_config_path(docker) != config_dest:
            problems.append(f"CMD --config {image_config_path(docker)} but the config is copied to {config_dest}")
        stops = docker.items(runtime, "STOPSIGNAL")
        if not stops or stops[-1] != "SIGTERM":
            problems.append("STOPSIGNAL SIGTERM is missing (SIGTERM is what drains streams)")
        config = ProxyConfig.file(config_file)
        config_holder["config"] = config
        exposed = {int(p.split("/")[0]) for e in docker.items(runtime, "EXPOSE") for p in e.split()}
        for port, name in config.listener_ports().items():
            if port not in exposed:
                problems.append(f"EXPOSE lacks {port}, the [listen] {name} port of {config.origin}")
        health = docker.items(runtime, "HEALTHCHECK")
        if not health:
            problems.append("no HEALTHCHECK")
        else:
            command = Dockerfile.exec_form(health[-1].split("CMD", 1)[1])
            call = healthz_call(command or [])
            if call is None:
                problems.append(f"HEALTHCHECK {health[-1]}: expected the sse-edge-healthz script")
            else:
                port, hpath = call
                if port != config.port("admin") or hpath != "/healthz":
                    problems.append(f"HEALTHCHECK checks {port}{hpath}, but the admin listener of "
                                    f"{config.origin} is {config.port('admin')} (/healthz)")
                script = [s for src, ss, d in copies if src is None and d.endswith("sse-edge-healthz") for s in ss]
                if not script:
                    problems.append("HEALTHCHECK uses sse-edge-healthz, which the image does not copy in")
                elif not os.access(REPO / script[0], os.X_OK):
                    problems.append(f"{script[0]} is not executable")
        problems_to_error([f"Dockerfile: {p}" for p in problems])
        return (f"config {rel(config_file)} -> {config_dest}, EXPOSE {sorted(exposed)}, "
                f"HEALTHCHECK on admin {config.port('admin')}, STOPSIGNAL SIGTERM")

    check("Dockerfile: runtime stage matches its config (EXPOSE, HEALTHCHECK, CMD, STOPSIGNAL)", runtime_stage)

    def dockerignore() -> str:
        ignore = REPO / ".dockerignore"
        need(ignore.is_file(), "no .dockerignore: target/ and .git/ would be sent to the builder")
        patterns = []
        for line in ignore.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append((line.startswith("!"), line.lstrip("!")))
        problems = []
        for stage in docker.stages:
            for source, sources, _ in docker.copies(stage):
                if source is None:
                    for s in sources:
                        if not dockerignore_included(patterns, s):
                            problems.append(f"COPY {s}: excluded by .dockerignore, the build would fail")
        for secret in ("target/release/sse-edge", ".git/config", "certs/localhost-key.pem"):
            if dockerignore_included(patterns, secret):
                problems.append(f".dockerignore lets {secret} into the build context")
        problems_to_error(problems)
        return "every COPY source in the context; target/, .git/, certs/ kept out"

    check(".dockerignore: keeps the context to what the Dockerfile copies", dockerignore)

    config = config_holder.get("config")
    if config is not None:
        env = {v: SAMPLES.get(v, PLACEHOLDER) for v in config.variables()}
        sse_edge_check(binary, config, env, f"{config.origin} (image default; "
                       f"{', '.join(sorted(env)) or 'no variables'} from the environment)")
    return docker, config


# ---------------------------------------------------------------------------------------------
# docker compose


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    resolved = {}
    for key, value in env.items():
        value = "" if value is None else str(value)
        # compose interpolation: ${NAME:-default} / ${NAME-default} take the default here
        value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
        value = ENV_REF.sub(PLACEHOLDER, value)
        resolved[key] = value
    return resolved


def duration_s(text: Any) -> float:
    """Seconds in "20s", "1m30s", "2min", or a bare number of seconds (compose, systemd)."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|us|min|m|s|h)?", str(text)):
        total += float(number) * {"ms": 0.001, "us": 1e-6, "min": 60, "m": 60, "s": 1, "h": 3600,
                                  "": 1}[unit]
    return total


def check_compose(binary: Path, docker: Dockerfile | None) -> None:
    path = DEPLOY / "docker-compose.yml"
    holder: dict[str, Any] = {}

    def parse() -> str:
        data = yaml.safe_load(path.read_text())
        need(isinstance(data, dict) and isinstance(data.get("services"), dict),
             f"{rel(path)}: no services")
        holder["data"] = data
        profiles = sorted({p for s in data["services"].values() for p in s.get("profiles", [])})
        return f"{len(data['services'])} services, profiles {profiles}"

    check(f"{rel(path)}: parses", parse)
    data = holder.get("data")
    if data is None:
        return
    services: dict[str, dict[str, Any]] = data["services"]
    default_config = image_config_path(docker) if docker else "/etc/sse-edge/proxy.toml"

    for name, service in services.items():
        build = service.get("build")
        if not build:
            continue  # not our image (redis)

        def one(name: str = name, service: dict[str, Any] = service, build: Any = build) -> str:
            problems = []
            context = path.parent / (build["context"] if isinstance(build, dict) else build)
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"build: {rel(dockerfile)} does not exist")
            command = service.get("command") or []
            if isinstance(command, str):
                command = shlex.split(command)
            in_image = command[command.index("--config") + 1] if "--config" in command else default_config
            mounts = {}
            for volume in service.get("volumes", []):
                host, container = volume.split(":")[:2]
                mounts[container] = path.parent / host
            host_file = mounts.get(in_image)
            if host_file is None:
                problems_to_error([f"service {name}: runs --config {in_image}, which no volume mounts "
                                   f"(mounts: {sorted(mounts) or 'none'})"])
            config = ProxyConfig.file(host_file)
            env = compose_env(service)
            sse_edge_check(binary, config, env, f"{config.origin} (compose service {name})")
            missing = sorted(config.variables() - env.keys())
            if missing:
                problems.append(f"service {name}: {config.origin} uses {missing}, not in its environment")
            demo = "demo" in command
            scheme, host, port = config.upstream(env)
            if demo:
                if host not in LOOPBACK:
                    problems.append(f"service {name}: `demo` binds [upstream] url, which must be loopback, not {host}")
            elif host in services:
                other = services[host]
                ocmd = other.get("command") or []
                opath = ocmd[ocmd.index("--config") + 1] if "--config" in ocmd else default_config
                ofile = {v.split(":")[1]: path.parent / v.split(":")[0] for v in other.get("volumes", [])}.get(opath)
                if ofile is not None:
                    oconfig = ProxyConfig.file(ofile)
                    problem = needs_reach(oconfig, port, f"service {name}'s [upstream] url ({host}:{port})")
                    if problem:
                        problems.append(problem)
            elif host not in LOOPBACK:
                problems.append(f"service {name}: [upstream] host {host} is no service of this file")
            for published in service.get("ports", []):
                container_port = int(str(published).split(":")[-1].split("/")[0])
                problem = needs_reach(config, container_port, f"service {name} publishes {published}, which")
                if problem:
                    problems.append(problem)
            health = (service.get("healthcheck") or {}).get("test")
            call = healthz_call(health or [])
            if call is None:
                problems.append(f"service {name}: no healthcheck with sse-edge-healthz")
            else:
                hport, hpath = call
                if hpath in ("/healthz", "/readyz", "/metrics") and hport != config.port("admin"):
                    problems.append(f"service {name}: healthcheck {hport}{hpath}, but [listen] admin is "
                                    f"{config.port('admin')} in {config.origin}")
                elif hport not in config.listener_ports() and not demo:
                    problems.append(f"service {name}: healthcheck port {hport} is no listener")
                elif demo and hport not in config.listener_ports() and hport != port:
                    problems.append(f"service {name}: healthcheck port {hport} is neither a listener "
                                    f"nor the demo origin ({port})")
            if not demo:
                grace = duration_s(service.get("stop_grace_period", "10s"))
                if grace <= config.grace():
                    problems.append(f"service {name}: stop_grace_period {grace:g} s is not longer than "
                                    f"shutdown_grace_s {config.grace()} of {config.origin}")
                if service.get("stop_signal", "SIGTERM") != "SIGTERM":
                    problems.append(f"service {name}: stop_signal should be SIGTERM")
                nofile = (service.get("ulimits") or {}).get("nofile")
                if nofile is None:
                    problems.append(f"service {name}: no ulimits.nofile (Docker's default soft limit may be 1024)")
                else:
                    soft = nofile["soft"] if isinstance(nofile, dict) else int(nofile)
                    problem = nofile_problem(config, int(soft), f"service {name}")
                    if problem:
                        problems.append(problem)
            cluster = config.data.get("cluster")
            if cluster is not None:
                url = str(cluster.get("redis", ""))
                match = re.match(r"rediss?://([^/:]+)(?::(\d+))?", url)
                if not match or match.group(1) not in services:
                    problems.append(f"service {name}: [cluster] redis {url!r} is no service of this file")
                else:
                    redis = services[match.group(1)]
                    if set(redis.get("profiles", [])) - set(service.get("profiles", [])):
                        problems.append(f"service {name}: redis runs only in profiles {redis.get('profiles')}")
            if not service.get("read_only"):
                problems.append(f"service {name}: read_only: true (sse-edge writes nothing)")
            problems_to_error(problems)
            return f"{config.origin} at {in_image}" + (", demo origin" if demo else "")

        check(f"{rel(path)}: service {name} matches its config", one)


# ---------------------------------------------------------------------------------------------
# Kubernetes


def check_kubernetes(binary: Path) -> None:
    path = DEPLOY / "kubernetes" / "sidecar.yaml"
    holder: dict[str, Any] = {}

    def parse() -> str:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for d in documents:
            need(all(k in d for k in ("apiVersion", "kind", "metadata")) and d["metadata"].get("name"),
                 f"{rel(path)}: a document lacks apiVersion, kind or metadata.name: {str(d)[:80]}")
        kinds = [d["kind"] for d in documents]
        for wanted in ("ConfigMap", "Deployment", "Service"):
            need(wanted in kinds, f"{rel(path)}: no {wanted}")
        holder["docs"] = documents
        return ", ".join(kinds)

    check(f"{rel(path)}: parses (ConfigMap, Deployment, Service)", parse)
    documents = holder.get("docs")
    if documents is None:
        return
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in documents:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}

    for deployment in by_kind["Deployment"]:
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        dname = deployment["metadata"]["name"]

        def hardened(spec: dict[str, Any] = spec, dname: str = dname) -> str:
            problems = []
            pod_sc = spec.get("securityContext", {})
            if pod_sc.get("runAsNonRoot") is not True:
                problems.append("pod securityContext.runAsNonRoot is not true")
            if pod_sc.get("runAsUser", 1) == 0:
                problems.append("pod runs as uid 0")
            for c in spec["containers"]:
                sc = c.get("securityContext", {})
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"container {c['name']}: readOnlyRootFilesystem is not true")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"container {c['name']}: allowPrivilegeEscalation is not false")
                res = c.get("resources", {})
                if not res.get("requests") or not res.get("limits", {}).get("memory"):
                    problems.append(f"container {c['name']}: resources.requests and limits.memory are expected")
            problems_to_error([f"Deployment {dname}: {p}" for p in problems])
            return "runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, resources"

        check(f"{rel(path)}: Deployment {dname} is hardened", hardened)

        def sidecar(spec: dict[str, Any] = spec, pod: dict[str, Any] = pod, dname: str = dname) -> str:
            problems = []
            volumes = {v["name"]: v for v in spec.get("volumes", [])}

            def mounted_config(container: dict[str, Any]) -> ProxyConfig | None:
                args = container.get("args", []) + container.get("command", [])
                cpath = args[args.index("--config") + 1] if "--config" in args else "/etc/sse-edge/proxy.toml"
                for m in container.get("volumeMounts", []):
                    if cpath.startswith(m["mountPath"].rstrip("/") + "/"):
                        volume = volumes.get(m["name"], {})
                        cm = configmaps.get(volume.get("configMap", {}).get("name"))
                        key = m.get("subPath") or cpath[len(m["mountPath"].rstrip("/")) + 1:]
                        if cm is None or key not in cm.get("data", {}):
                            problems.append(f"container {container['name']}: --config {cpath} is not a "
                                            f"key of a mounted ConfigMap")
                            return None
                        return ProxyConfig(cm["data"][key], f"{rel(path)} ConfigMap "
                                           f"{cm['metadata']['name']}/{key}", path.parent)
                problems.append(f"container {container['name']}: nothing is mounted at --config {cpath}")
                return None

            def container_env(container: dict[str, Any]) -> dict[str, str]:
                env = {}
                for e in container.get("env", []):
                    if "value" in e:
                        env[e["name"]] = str(e["value"])
                    else:
                        ref = e.get("valueFrom", {}).get("secretKeyRef")
                        if ref and ref["name"] in secrets:
                            data = secrets[ref["name"]].get("stringData", {})
                            if ref["key"] not in data and ref["key"] not in secrets[ref["name"]].get("data", {}):
                                problems.append(f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
                        env[e["name"]] = PLACEHOLDER
                return env

            def port_number(container: dict[str, Any], port: Any) -> int:
                if isinstance(port, int):
                    return port
                for p in container.get("ports", []):
                    if p.get("name") == port:
                        return int(p["containerPort"])
                problems.append(f"container {container['name']}: no port named {port}")
                return -1

            def pre_stop(container: dict[str, Any]) -> int:
                hook = container.get("lifecycle", {}).get("preStop", {})
                if "sleep" in hook:
                    return int(hook["sleep"]["seconds"])
                command = hook.get("exec", {}).get("command", [])
                if command[:1] == ["sleep"]:
                    return int(command[1])
                return 0

            containers = spec["containers"]
            proxies = [c for c in containers if "demo" not in c.get("args", [])
                       and "sse-edge" in c.get("image", "")]
            need(proxies, f"Deployment {dname}: no sse-edge container")
            proxy = proxies[0]
            config = mounted_config(proxy)
            if config is None:
                problems_to_error(problems)
            env = container_env(proxy)
            sse_edge_check(binary, config, env, f"{config.origin} (container {proxy['name']})")
            missing = sorted(config.variables() - env.keys())
            if missing:
                problems.append(f"container {proxy['name']}: {config.origin} uses {missing}, not in its env")
            admin = config.port("admin")
            if admin is None:
                problems.append(f"{config.origin}: no [listen] admin for the probes")
            for probe, wanted in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = proxy.get(probe, {}).get("httpGet")
                if not get:
                    problems.append(f"container {proxy['name']}: no {probe}.httpGet {wanted}")
                    continue
                port = port_number(proxy, get["port"])
                if get.get("path") != wanted:
                    problems.append(f"{probe} path {get.get('path')}, expected {wanted}")
                if port != admin:
                    problems.append(f"{probe} port {get['port']} = {port}, but [listen] admin is {admin}")
                elif (problem := needs_reach(config, port, f"the kubelet's {probe}")):
                    problems.append(problem)
            declared = {int(p["containerPort"]) for p in proxy.get("ports", [])}
            for port, name in config.listener_ports().items():
                if port not in declared:
                    problems.append(f"container {proxy['name']}: ports lack {port} ([listen] {name})")
            annotations = pod.get("metadata", {}).get("annotations", {})
            if "prometheus.io/port" in annotations and int(annotations["prometheus.io/port"]) != admin:
                problems.append(f"annotation prometheus.io/port {annotations['prometheus.io/port']} is not "
                                f"the admin port {admin}")
            stop = pre_stop(proxy)
            if stop <= 0:
                problems.append(f"container {proxy['name']}: no preStop sleep (the endpoint must leave "
                                "the Service before SIGTERM)")
            period = int(spec.get("terminationGracePeriodSeconds", 30))
            if period <= stop + config.grace():
                problems.append(f"terminationGracePeriodSeconds {period} is not more than preStop {stop} s "
                                f"+ shutdown_grace_s {config.grace()} s")
            scheme, host, uport = config.upstream(env)
            others = [c for c in containers if c is not proxy]
            if host in LOOPBACK:
                owners = [c for c in others if uport in {int(p["containerPort"]) for p in c.get("ports", [])}]
                if not owners:
                    problems.append(f"[upstream] url is {host}:{uport}, but no other container of the pod "
                                    f"declares port {uport}")
                for app in owners:
                    if 0 < pre_stop(app) < stop + config.grace():
                        problems.append(f"container {app['name']}: preStop {pre_stop(app)} s ends before the "
                                        f"proxy's drain ({stop} + {config.grace()} s)")
            labels = pod.get("metadata", {}).get("labels", {})
            services = by_kind.get("Service", [])
            targets = []
            for service in services:
                selector = service["spec"].get("selector", {})
                if not selector or any(labels.get(k) != v for k, v in selector.items()):
                    continue
                for p in service["spec"]["ports"]:
                    target = port_number(proxy, p.get("targetPort", p["port"]))
                    targets.append(target)
                    if target == admin:
                        problems.append(f"Service {service['metadata']['name']} exposes the admin port")
                    elif target not in (config.port("http"), config.port("https")):
                        problems.append(f"Service {service['metadata']['name']} targets {target}, not "
                                        "sse-edge's http/https listener")
                    elif (problem := needs_reach(config, target, f"Service {service['metadata']['name']}")):
                        problems.append(problem)
            if not targets:
                problems.append(f"no Service selects the pods of Deployment {dname}")
            problems_to_error([f"Deployment {dname}: {p}" for p in problems])
            for app in others:
                if "demo" in app.get("args", []):
                    app_config = mounted_config(app)
                    if app_config is not None:
                        if app_config.upstream()[1:] != (host, uport):
                            raise Problem(f"the demo app serves {app_config.upstream()[1:]}, the proxy polls "
                                          f"{(host, uport)}")
                        sse_edge_check(binary, app_config, container_env(app),
                                       f"{app_config.origin} (container {app['name']}, demo origin)")
            return (f"probes on admin {admin}, Service -> {sorted(set(targets))}, preStop {stop} s + grace "
                    f"{config.grace()} s < terminationGracePeriodSeconds {period}")

        check(f"{rel(path)}: Deployment {dname} matches its ConfigMap", sidecar)


# ---------------------------------------------------------------------------------------------
# systemd


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, {})
            continue
        need(current is not None and "=" in line, f"line {number}: {raw!r} is not Key=value in a section")
        key, _, value = line.partition("=")
        sections[current].setdefault(key.strip(), []).append(value.strip())
    return sections


def check_systemd(binary: Path) -> None:
    path = DEPLOY / "systemd" / "sse-edge.service"
    holder: dict[str, Any] = {}

    def parse() -> str:
        unit = parse_unit(path.read_text())
        for section in ("Unit", "Service", "Install"):
            need(section in unit, f"{rel(path)}: no [{section}]")
        holder["unit"] = unit
        return f"{sum(len(v) for v in unit['Service'].values())} [Service] settings"

    check(f"{rel(path)}: parses", parse)
    unit = holder.get("unit")
    if unit is None:
        return
    service = unit["Service"]

    def last(key: str) -> str | None:
        return service.get(key, [None])[-1]

    def matches() -> str:
        problems = []
        start = shlex.split(last("ExecStart") or "")
        need("--config" in start, f"ExecStart {start} has no --config")
        in_host = start[start.index("--config") + 1]
        config = ProxyConfig.file(path.parent / Path(in_host).name)
        for pre in service.get("ExecStartPre", []):
            words = shlex.split(pre.lstrip("-+!@:"))
            if "check" in words and words[words.index("--config") + 1] != in_host:
                problems.append(f"ExecStartPre checks another config than ExecStart runs: {pre}")
        reload = last("ExecReload") or ""
        if not re.search(r"kill -(HUP|s HUP|SIGHUP) \$MAINPID", reload):
            problems.append(f"ExecReload should be `/bin/kill -HUP $MAINPID` (SIGHUP reloads certificates), not {reload!r}")
        if last("KillSignal") not in ("SIGTERM", None):
            problems.append(f"KillSignal={last('KillSignal')}: SIGTERM is what drains streams")
        if "KillSignal" not in service:
            problems.append("KillSignal=SIGTERM is expected (explicit)")
        stop = duration_s(last("TimeoutStopSec") or "90s")
        if stop <= config.grace():
            problems.append(f"TimeoutStopSec {stop:g} s is not longer than shutdown_grace_s {config.grace()}")
        limit = last("LimitNOFILE") or "1024"
        soft = int(limit.split(":")[0]) if limit.split(":")[0].isdigit() else 1 << 30
        if (problem := nofile_problem(config, soft, "LimitNOFILE")):
            problems.append(problem)
        for key, wanted in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                            ("PrivateTmp", "yes"), ("ProtectHome", "yes")):
            if last(key) != wanted:
                problems.append(f"{key}={wanted} is expected (found {last(key)})")
        user = last("User")
        if last("DynamicUser") != "yes" and (user is None or user in ("root", "0")):
            problems.append("set User= (a non-root user) or DynamicUser=yes")
        privileged = [p for p in (config.port("https"), config.port("http")) if p is not None and p < 1024]
        if privileged and "CAP_NET_BIND_SERVICE" not in " ".join(service.get("AmbientCapabilities", [])):
            problems.append(f"ports {privileged} need AmbientCapabilities=CAP_NET_BIND_SERVICE")
        if not last("Restart"):
            problems.append("Restart= is expected")
        env: dict[str, str] = {}
        for env_file in service.get("EnvironmentFile", []):
            example = path.parent / (Path(env_file.lstrip("-")).name + ".example")
            if not example.is_file():
                problems.append(f"EnvironmentFile {env_file}: no {rel(example)} to show what goes in it")
                continue
            for line in example.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    k, _, v = line.partition("=")
                    env[k.strip()] = v.strip().strip('"')
        for item in service.get("Environment", []):
            for word in shlex.split(item):
                k, _, v = word.partition("=")
                env[k] = v
        missing = sorted(config.variables() - env.keys())
        if missing:
            problems.append(f"{config.origin} uses {missing}, which neither Environment= nor the "
                            "EnvironmentFile example sets")
        problems_to_error([f"{rel(path)}: {p}" for p in problems])
        holder["config"], holder["env"] = config, env
        return (f"{config.origin}; TimeoutStopSec {stop:g} s > grace {config.grace()} s, "
                f"LimitNOFILE {limit}, ExecReload SIGHUP")

    check(f"{rel(path)}: settings match its config", matches)
    if "config" in holder:
        sse_edge_check(binary, holder["config"], holder["env"],
                       f"{holder['config'].origin} (systemd, EnvironmentFile example)")

    def analyze() -> str:
        tool = shutil.which("systemd-analyze")
        if not tool:
            raise Skip("systemd-analyze is not installed")
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "sse-edge.service"
            copy.write_text(path.read_text().replace("/usr/local/bin/sse-edge", str(binary.resolve())))
            done = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
            # verify exits 0 on unknown keys and unparsable values; it names the file in them
            output = (done.stdout + done.stderr).replace(str(copy), rel(path)).strip()
            warnings = [line for line in output.splitlines() if rel(path) in line]
            need(done.returncode == 0 and not warnings, f"systemd-analyze verify:\n{output}")
        return "no warnings"

    check(f"{rel(path)}: systemd-analyze verify", analyze)


# ---------------------------------------------------------------------------------------------
# ECS


def check_ecs(binary: Path, docker: Dockerfile | None) -> None:
    path = DEPLOY / "ecs" / "task-definition.json"
    holder: dict[str, Any] = {}

    def parse() -> str:
        data = json.loads(path.read_text())
        for key in ("family", "containerDefinitions"):
            need(key in data, f"{rel(path)}: no {key}")
        if "FARGATE" in data.get("requiresCompatibilities", []):
            need(data.get("networkMode") == "awsvpc", "Fargate needs networkMode awsvpc")
            need(isinstance(data.get("cpu"), str) and isinstance(data.get("memory"), str),
                 "Fargate needs task-level cpu and memory (strings)")
        names = [c.get("name") for c in data["containerDefinitions"]]
        for c in data["containerDefinitions"]:
            need(c.get("name") and c.get("image"), f"a container lacks name or image: {c}")
        holder["data"] = data
        return f"containers {names}"

    check(f"{rel(path)}: parses (task definition)", parse)
    data = holder.get("data")
    if data is None or docker is None:
        return

    def matches() -> str:
        problems = []
        containers = {c["name"]: c for c in data["containerDefinitions"]}
        proxies = [c for c in containers.values() if "sse-edge" in c["image"]]
        need(proxies, "no sse-edge container")
        proxy = proxies[0]
        command = proxy.get("command") or Dockerfile.exec_form(docker.items(docker.runtime(), "CMD")[-1])
        in_image = command[command.index("--config") + 1] if "--config" in command else "proxy.toml"
        config_file, config_dest = dockerfile_config(docker)
        need(in_image == config_dest, f"sse-edge runs --config {in_image}, but the image's config is "
             f"at {config_dest} (ECS mounts no file; build one in with --build-arg CONFIG=...)")
        config = ProxyConfig.file(config_file)
        env = {e["name"]: e["value"] for e in proxy.get("environment", [])}
        env.update({s["name"]: PLACEHOLDER for s in proxy.get("secrets", [])})
        sse_edge_check(binary, config, env, f"{config.origin} (ECS container {proxy['name']})")
        missing = sorted(config.variables() - env.keys())
        if missing:
            problems.append(f"{config.origin} uses {missing}: not in environment or secrets")
        call = healthz_call((proxy.get("healthCheck") or {}).get("command", []))
        if call is None:
            problems.append("sse-edge has no healthCheck with sse-edge-healthz")
        elif call != (config.port("admin"), "/healthz"):
            problems.append(f"healthCheck checks {call}, the admin listener is {config.port('admin')} /healthz")
        mapped = {int(p["containerPort"]) for p in proxy.get("portMappings", [])}
        for port in mapped:
            if (problem := needs_reach(config, port, f"portMapping {port}")):
                problems.append(problem)
        for name in ("http", "https"):
            port = config.port(name)
            if port is not None and port not in mapped:
                problems.append(f"portMappings lack {port} ([listen] {name})")
        nofile = [u for u in proxy.get("ulimits", []) if u.get("name") == "nofile"]
        if not nofile:
            problems.append("no ulimits nofile")
        else:
            if (problem := nofile_problem(config, int(nofile[0]["softLimit"]), "ulimits nofile")):
                problems.append(problem)
            if nofile[0]["hardLimit"] > 1048576 or nofile[0]["softLimit"] > nofile[0]["hardLimit"]:
                problems.append("nofile: softLimit <= hardLimit <= 1048576 (Fargate's maximum)")
        stop = int(proxy.get("stopTimeout", 30))
        if not config.grace() < stop <= 120:
            problems.append(f"stopTimeout {stop}: more than shutdown_grace_s {config.grace()} and at most 120")
        for dep in proxy.get("dependsOn", []):
            if dep["containerName"] not in containers:
                problems.append(f"dependsOn {dep['containerName']}: no such container")
            elif dep["condition"] == "HEALTHY" and not containers[dep["containerName"]].get("healthCheck"):
                problems.append(f"dependsOn {dep['containerName']} HEALTHY, but it has no healthCheck")
        scheme, host, port = config.upstream(env)
        if host in LOOPBACK:
            owners = [c["name"] for c in containers.values() if c is not proxy and
                      port in {int(p["containerPort"]) for p in c.get("portMappings", [])}]
            if not owners:
                problems.append(f"[upstream] is {host}:{port} (same task), but no container maps port {port}")
            elif not any(d["containerName"] in owners for d in proxy.get("dependsOn", [])):
                problems.append(f"sse-edge should dependsOn {owners[0]} (its origin), so ECS stops it first")
        if proxy.get("readonlyRootFilesystem") is not True:
            problems.append("readonlyRootFilesystem should be true")
        if str(proxy.get("user", "1")).split(":")[0] in ("0", "root"):
            problems.append("user is root")
        problems_to_error([f"{rel(path)}: {p}" for p in problems])
        return (f"image config {config.origin}; healthCheck on admin {config.port('admin')}, "
                f"portMappings {sorted(mapped)}, nofile {nofile[0]['softLimit']}, stopTimeout {stop} s")

    check(f"{rel(path)}: sse-edge container matches the image's config", matches)


# ---------------------------------------------------------------------------------------------


def check_docs() -> None:
    def readme() -> str:
        text = (DEPLOY / "README.md").read_text()
        files = sorted(rel(p) for p in DEPLOY.rglob("*") if p.is_file() and p.name != "README.md"
                       and "__pycache__" not in p.parts)
        missing = [f for f in files if f.removeprefix("deploy/") not in text and f not in text]
        need(not missing, f"deploy/README.md does not mention {missing}")
        for script in ("deploy/check-dockerfile-build.sh", "deploy/check.py", "deploy/docker/healthz.sh"):
            need(os.access(REPO / script, os.X_OK), f"{script} is not executable")
        return f"{len(files)} files described"

    check("deploy/README.md describes every file; scripts are executable", readme)

    def license_text() -> str:
        cargo = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
        need(cargo.get("license") == "Apache-2.0", f"Cargo.toml license is {cargo.get('license')}")
        text = (REPO / "LICENSE").read_text()
        for phrase in ("Apache License", "Version 2.0, January 2004", "1. Definitions.",
                       "4. Redistribution.", "9. Accepting Warranty or Additional Liability.",
                       "END OF TERMS AND CONDITIONS", "APPENDIX: How to apply the Apache License"):
            need(phrase in text, f"LICENSE: {phrase!r} missing: not the full Apache-2.0 text")
        return "Apache-2.0, as Cargo.toml says"

    check("LICENSE is the Apache-2.0 text", license_text)


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    binary = Path(sys.argv[1]).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        print(f"check.py: {sys.argv[1]} is not an executable sse-edge binary", file=sys.stderr)
        return 2
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    print(f"checking deploy/ with {version.stdout.strip() or binary}")
    docker, _ = check_dockerfile(binary)
    check_compose(binary, docker)
    check_kubernetes(binary)
    check_systemd(binary)
    check_ecs(binary, docker)
    check_docs()
    passed = sum(1 for s, _, _ in RESULTS if s == "PASS")
    failed = sum(1 for s, _, _ in RESULTS if s == "FAIL")
    skipped = [n for s, n, _ in RESULTS if s == "SKIP"]
    if skipped:
        print(f"skipped (not failures): {'; '.join(skipped)}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
