"""The deployment files say what docs/deploy.md promises: docker-compose.yml, .env.example,
deploy/prometheus.yml and the Kubernetes example under deploy/kubernetes/.

Every check parses the files with PyYAML. Where `docker compose` (v2) or `docker-compose`
(v1) is installed, the compose file is also validated by it (`config -q`, which reads the
file only and never talks to a Docker engine), and where `promtool` is, the Prometheus
configuration by it; elsewhere those checks alone are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
KUBERNETES = ROOT / "deploy" / "kubernetes"

WORKERS = ("worker", "backfill-worker")
MONITORING = ("flower", "prometheus")
# container port -> service that must publish it
PUBLISHED = {"api": 8000, "postgres": 5432, "redis": 6379, "flower": 5555, "prometheus": 9090}
# Exact versions only: `redis:7`, `pg17`, `2.0` or `latest` move under a running deployment.
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([-.][A-Za-z0-9.]+)?$")

_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(KeyError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `$$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else str(value)
        if op in (":?", "?"):
            if empty:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return value or ""

    return _VAR.sub(one, text)


def variables(text: str) -> dict[str, tuple[str | None, str | None]]:
    """Each variable the text refers to: (operator, default or message)."""
    found: dict[str, tuple[str | None, str | None]] = {}
    for match in _VAR.finditer(text):
        if match.group("name"):
            found.setdefault(match.group("name"), (match.group("op"), match.group("arg")))
    return found


def compose_variables() -> dict[str, tuple[str | None, str | None]]:
    """The variables docker-compose.yml uses (its comments left out)."""
    return variables("\n".join(strings(yaml.safe_load(COMPOSE.read_text()))))


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in (service.get("depends_on") or {}).items()}


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


# ----------------------------------------------------------------------------- compose


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    expected = {"postgres", "redis", "migrate", "api", *WORKERS, *MONITORING}
    assert set(services) == expected
    for name, service in services.items():
        if name == "migrate":
            continue  # a one-shot: its exit code is its health (next test)
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    checks = {
        name: " ".join(s["healthcheck"]["test"])
        for name, s in services.items()
        if name != "migrate"
    }
    assert "pg_isready" in checks["postgres"]
    assert "redis-cli ping" in checks["redis"]
    assert "python -c" in checks["api"] and "http://127.0.0.1:8000/healthz" in checks["api"]
    assert "urllib.request" in checks["api"]  # the slim image has no curl
    for name in WORKERS:
        assert checks[name] == "CMD vitrine worker-check", name


def test_migrate_is_a_one_shot_the_others_wait_for(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["command"] == ["db", "upgrade"]
    assert depends(migrate) == {"postgres": "service_healthy"}
    for name in ("api", *WORKERS):
        assert depends(services[name]) == {
            "migrate": "service_completed_successfully",
            "postgres": "service_healthy",
            "redis": "service_healthy",
        }, name
    for name, service in services.items():
        if name != "migrate":
            assert service.get("restart") == "unless-stopped", name


def test_published_ports_are_configurable_and_on_loopback_by_default(
    services: dict[str, Any],
) -> None:
    published = {}
    for name, service in services.items():
        for entry in service.get("ports") or []:
            assert isinstance(entry, str), f"{name}: use the short 'HOST_IP:PORT:PORT' syntax"
            assert entry.count("${") == 2, f"{name}: address and port from .env: {entry}"
            host_ip, host_port, container_port = interpolate(entry, {}).split(":")
            assert host_ip == "127.0.0.1", f"{name} published beyond this host: {entry}"
            assert host_port == container_port, name
            changed = interpolate(entry, {v: "1" for v in variables(entry)}).split(":")
            assert changed[:2] == ["1", "1"], f"{name}: {entry} ignores its variables"
            published[name] = int(container_port)
    assert published == PUBLISHED


def test_images_are_pinned_to_exact_versions(services: dict[str, Any]) -> None:
    images = {name: interpolate(s["image"], {}) for name, s in services.items()}
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert PINNED_TAG.match(tag), f"{name}: {image} is a moving tag"
    assert images["postgres"].startswith("pgvector/pgvector:")
    assert images["redis"].startswith("redis:")
    vitrine = {images[name] for name in ("migrate", "api", *WORKERS)}
    assert len(vitrine) == 1, "one vitrine image for all its services"
    assert variables(services["api"]["image"])["VITRINE_IMAGE_TAG"][0] == ":-"


def test_no_secret_is_written_in_the_compose_file(services: dict[str, Any]) -> None:
    required = {name for name, (op, _) in compose_variables().items() if op == ":?"}
    assert required == {"POSTGRES_PASSWORD", "REDIS_PASSWORD"}
    for name, service in services.items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|AUTH", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name}: {key}={value}"
        for text in strings(service):
            for password in re.findall(r"://[^/@\s:]*:([^@\s]+)@", text):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password), f"{name}: {text}"
    redis_argv = services["redis"]["command"]
    password = redis_argv[redis_argv.index("--requirepass") + 1]
    assert password == "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"
    with pytest.raises(MissingVariable, match="set POSTGRES_PASSWORD in .env"):
        interpolate(environment(services["api"])["DATABASE_URL"], {"POSTGRES_PASSWORD": ""})


def test_env_example_documents_every_variable_and_holds_no_secret() -> None:
    example = env_example()
    for name, (op, arg) in compose_variables().items():
        assert name in example, f".env.example does not document {name}"
        if op == ":?":
            assert example[name] == "", f".env.example must leave {name} empty"
        elif op == ":-":
            assert example[name] == arg, f"{name}: .env.example {example[name]!r}, compose {arg!r}"
    assert "openssl rand" in ENV_EXAMPLE.read_text()  # how to make a password
    ignored = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert "/.env" in ignored or ".env" in ignored
    assert not any(line in (".env*", "*.example", "/.env*") for line in ignored)


def test_uploads_volume_is_written_by_the_api_and_read_by_the_workers(
    services: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert "uploads" in compose["volumes"]
    api = services["api"]
    assert "uploads:/uploads" in api["volumes"]
    assert environment(api)["VITRINE_UPLOAD_DIR"] == "/uploads"
    for name in WORKERS:
        assert "uploads:/uploads:ro" in services[name]["volumes"], name
        assert environment(services[name])["VITRINE_FILE_ROOTS"] == "/uploads", name
    for name, service in services.items():
        mounts = [v for v in service.get("volumes") or [] if v.startswith("uploads:")]
        if name != "api":
            assert all(v.endswith(":ro") for v in mounts), f"{name} may write uploads"


def test_api_serves_on_8000(services: dict[str, Any]) -> None:
    api = services["api"]
    assert api["command"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "container_name" not in api


def test_workers_scale_with_compose_and_expose_metrics(services: dict[str, Any]) -> None:
    for name in WORKERS:
        worker = services[name]
        for key in ("ports", "container_name", "scale"):
            assert key not in worker, f"{name}: {key} breaks --scale"
        assert "replicas" not in (worker.get("deploy") or {}), name
        assert environment(worker)["VITRINE_METRICS_PORT"] == "9808", name
        assert worker["init"] is True
        assert seconds(worker["stop_grace_period"]) >= 120  # past the 90 s task time limit
        assert worker["command"][0] == "worker"
    assert services["worker"]["command"][1:3] == ["--queues", "uploads"]
    backfill = services["backfill-worker"]["command"]
    assert backfill[1:3] == ["--queues", "backfill"]
    assert backfill[backfill.index("--nice") + 1] == "10"
    for name in ("api", "migrate"):
        assert "VITRINE_METRICS_PORT" not in environment(services[name]), name


def test_flower_and_prometheus_are_under_the_monitoring_profile(services: dict[str, Any]) -> None:
    for name, service in services.items():
        expected = ["monitoring"] if name in MONITORING else None
        assert service.get("profiles") == expected, name
    prometheus = services["prometheus"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    broker = environment(services["flower"])["CELERY_BROKER_URL"]
    assert broker.startswith("redis://:${REDIS_PASSWORD:?")


def test_prometheus_scrapes_the_api_and_every_worker_replica() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    static = [
        t for job in jobs.values() for c in job.get("static_configs", []) for t in c["targets"]
    ]
    assert "api:9809" in static  # the API's metrics port, not the one clients reach
    discovered = {
        name: sd
        for job in jobs.values()
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert set(discovered) == set(WORKERS)
    for name, sd in discovered.items():
        assert (sd["type"], sd["port"]) == ("A", 9808), name  # A records: one per replica
    assert not any(name.startswith("tasks.") for name in discovered)  # Swarm-only names


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (the parse check above always runs)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def run_compose_config(tmp_path: Path, env_file_text: str) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env_file = tmp_path / "compose.env"
    env_file.write_text(env_file_text)
    env = {k: v for k, v in os.environ.items() if k not in compose_variables()}
    # `config` reads files only; a client that tried an engine anyway would find none.
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_validates_the_file(tmp_path: Path) -> None:
    result = run_compose_config(tmp_path, "POSTGRES_PASSWORD=x\nREDIS_PASSWORD=x\n")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    result = run_compose_config(tmp_path, ENV_EXAMPLE.read_text())  # copied, not filled in
    assert result.returncode != 0
    assert re.search(r"set (POSTGRES|REDIS)_PASSWORD in \.env", result.stdout + result.stderr)


# -------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def find(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def deployment(manifests: list[dict[str, Any]], component: str) -> dict[str, Any]:
    found = [
        m
        for m in manifests
        if m["kind"] == "Deployment"
        and m["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(found) == 1, component
    return found[0]


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def containers(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in ("Deployment", "Job"):
            for c in m["spec"]["template"]["spec"]["containers"]:
                yield m["metadata"]["name"], c


def test_kustomization_lists_every_manifest(manifests: list[dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "Job",
            "PersistentVolumeClaim",
            "ScaledObject",
            "Service",
            "TriggerAuthentication",
        ]
    )
    for image in kustomization["images"]:
        assert PINNED_TAG.match(image["newTag"]), image


def test_kubernetes_images_are_pinned_and_secrets_are_referenced(
    manifests: list[dict[str, Any]],
) -> None:
    assert not any(m["kind"] == "Secret" for m in manifests)  # created by hand (docs)
    for name, c in containers(manifests):
        _, _, tag = c["image"].rpartition(":")
        assert PINNED_TAG.match(tag), f"{name}: {c['image']}"
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "vitrine-secrets"
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "vitrine-secrets"
        assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@$(REDIS_ADDRESS)/0"
        assert [ref["configMapRef"]["name"] for ref in c["envFrom"]] == ["vitrine-config"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    for m in manifests:
        for text in strings(m):
            for password in re.findall(r"://[^/@\s:]*:([^@\s]+)@", text):
                assert password == "$(REDIS_PASSWORD)", text
    config = find(manifests, "ConfigMap", "vitrine-config")["data"]
    assert not any(re.search(r"PASSWORD|SECRET|TOKEN|_URL$", key) for key in config)


def test_api_deployment_and_service(manifests: list[dict[str, Any]]) -> None:
    api = deployment(manifests, "api")
    c = container(api)
    assert c["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "metrics": 9809}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VITRINE_API_METRICS_PORT"] == "9809"  # so /metrics is not on `http`
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["uploads"]["mountPath"] == "/uploads" and not mounts["uploads"].get("readOnly")
    service = find(manifests, "Service")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert (
        service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_worker_deployment(manifests: list[dict[str, Any]]) -> None:
    worker = deployment(manifests, "worker")
    spec = worker["spec"]
    assert "replicas" not in spec  # KEDA's to set
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    c = container(worker)
    assert c["args"][:3] == ["worker", "--queues", "uploads"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["exec"]["command"] == ["vitrine", "worker-check"], probe
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9808}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VITRINE_METRICS_PORT"] == "9808" and env["VITRINE_METRICS_HOST"] == "0.0.0.0"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["uploads"]["mountPath"] == "/uploads" and mounts["uploads"]["readOnly"] is True
    config = find(manifests, "ConfigMap", "vitrine-config")["data"]
    assert config["VITRINE_FILE_ROOTS"] == "/uploads"
    assert config["VITRINE_UPLOAD_DIR"] == "/uploads"


def test_keda_scales_the_worker_deployment_on_the_uploads_list(
    manifests: list[dict[str, Any]],
) -> None:
    scaled = find(manifests, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    worker = deployment(manifests, "worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == worker["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert scaled["spec"]["minReplicaCount"] >= 1
    assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    assert metadata["listName"] == "uploads"
    assert metadata["listLength"] == "20"  # KEDA wants strings in metadata
    config = find(manifests, "ConfigMap", "vitrine-config")["data"]
    assert metadata["addressFromEnv"] in config  # reaches the worker through envFrom
    assert "address" not in metadata and "password" not in metadata
    auth = find(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"], ref["key"]) == (
        "password",
        "vitrine-secrets",
        "redis-password",
    )


def test_interpolation_helper() -> None:
    assert interpolate("${A:-x}-${B-y}-$${C}", {"B": ""}) == "x--${C}"
    with pytest.raises(MissingVariable):
        interpolate("${A:?need A}", {"A": ""})
    assert interpolate("${A?need A}", {"A": ""}) == ""
