"""The Kubernetes deployment (deploy/k8s) and the images' Dockerfile, checked offline.

Renders every overlay with the kubectl that `make k8s-tools` puts in .tools/bin
(`make test` runs it first, through k8s-check); a missing kubectl fails these tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from videojobs.common.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checker = _load("k8s_check", ROOT / "scripts" / "k8s_check.py")
healthcheck = _load("videojobs_healthcheck", ROOT / "deploy" / "docker" / "healthcheck.py")
fetch_model = _load("videojobs_fetch_model", ROOT / "deploy" / "docker" / "fetch_model.py")


@pytest.fixture(scope="module")
def kubectl() -> Path:
    if not KUBECTL.is_file():
        pytest.fail(f"kubectl not found at {KUBECTL}: run `make k8s-tools` (make test and make k8s-check install it)")
    return KUBECTL


@pytest.fixture(scope="module")
def rendered(kubectl: Path) -> dict[str, list[dict[str, Any]]]:
    return {o.name: checker.render(o, kubectl) for o in checker.overlays(K8S)}


def by(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = by(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, got {len(found)}"
    return found[0]


def all_containers(objects: list[dict[str, Any]]):
    for o in objects:
        spec = checker.pod_spec(o)
        if spec:
            for role, c in checker.containers(spec):
                yield o, role, c, spec


def configmap_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("videojobs-config")]
    return cm["data"]


def run_checker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "k8s_check.py"), "--kubectl", str(KUBECTL), *args],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )


# ------------------------------------------------------------------ the checker passes
def test_overlays_are_dev_and_prod() -> None:
    assert [o.name for o in checker.overlays(K8S)] == ["dev", "prod"]


def test_k8s_check_passes_on_the_repository(kubectl: Path) -> None:
    proc = run_checker()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "k8s-check: OK" in proc.stdout


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_object_is_schema_valid(rendered, overlay: str) -> None:
    errors = {checker.ref(o): checker.schema_errors(o, K8S) for o in rendered[overlay]}
    assert {k: v for k, v in errors.items() if v} == {}
    # Custom resources are validated against a schema shipped in the repository, none skipped.
    assert checker.SKIPPED == {}
    for o in rendered[overlay]:
        if "k8s.io" not in o["apiVersion"] and "/" in o["apiVersion"] and o["apiVersion"].split("/")[0] not in (
            "apps", "batch", "policy", "autoscaling",
        ):
            assert (o["apiVersion"], o["kind"]) in checker.CRD_SCHEMAS
            assert (K8S / "schemas" / checker.CRD_SCHEMAS[(o["apiVersion"], o["kind"])]).is_file()


# --------------------------------------------------------------------------- policy
@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_container_is_hardened_and_bounded(rendered, overlay: str) -> None:
    seen = 0
    for o, role, c, spec in all_containers(rendered[overlay]):
        seen += 1
        where = f"{overlay} {checker.ref(o)} {c['name']}"
        limits = c.get("resources", {}).get("limits", {})
        requests = c.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= set(limits), f"{where}: limits"
        assert {"cpu", "memory"} <= set(requests), f"{where}: requests"
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot", spec.get("securityContext", {}).get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", spec.get("securityContext", {}).get("runAsUser")) != 0, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
        assert not sc.get("capabilities", {}).get("add"), where
        assert spec.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: image {image}"
        if o["kind"] in ("Deployment", "StatefulSet") and role == "container":
            assert c.get("livenessProbe") and c.get("readinessProbe"), f"{where}: probes"
    assert seen >= 4


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_no_plaintext_secret_values(rendered, overlay: str) -> None:
    objects = rendered[overlay]
    assert by(objects, "Secret") == [], "Secrets are created out of band, never rendered with values"
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|DATABASE_URL", re.I)
    for o, _, c, _ in all_containers(objects):
        for env in c.get("env", []):
            if secretish.search(env["name"]):
                assert "valueFrom" in env and "secretKeyRef" in env["valueFrom"], f"{checker.ref(o)} {env['name']}"
    for key, value in configmap_data(objects).items():
        assert not secretish.search(key), key
        assert not checker.CREDENTIALS_IN_URL.search(value), key


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_api_and_worker_use_native_grpc_probes(rendered, overlay: str) -> None:
    objects = rendered[overlay]
    api = one(objects, "Deployment", "videojobs-api")["spec"]["template"]["spec"]["containers"][0]
    worker = one(objects, "Deployment", "videojobs-worker")["spec"]["template"]["spec"]["containers"][0]
    gateway = one(objects, "Deployment", "videojobs-gateway")["spec"]["template"]["spec"]["containers"][0]
    cfg = configmap_data(objects)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert api[probe]["grpc"]["port"] == int(cfg["VIDEOJOBS_GRPC_PORT"])
        assert worker[probe]["grpc"]["port"] == int(cfg["VIDEOJOBS_WORKER_HEALTH_PORT"])
    assert api["readinessProbe"]["grpc"]["service"] == "videojobs.v1.JobService"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert int(cfg["VIDEOJOBS_HTTP_PORT"]) in [p["containerPort"] for p in gateway["ports"]]


# ------------------------------------------------------- settings the services read
@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_env_vars_of_videojobs_containers_are_settings_fields(rendered, overlay: str) -> None:
    objects = rendered[overlay]
    fields = set(Settings.model_fields)
    configmaps = {o["metadata"]["name"]: o for o in by(objects, "ConfigMap")}
    checked = 0
    for o, _, c, _ in all_containers(objects):
        if not checker.is_videojobs_pod(o):
            continue
        env = checker.container_env(c, configmaps)
        assert env, f"{checker.ref(o)} {c['name']} gets no settings"
        for name in env:
            if name.startswith("VIDEOJOBS_"):
                assert name.removeprefix("VIDEOJOBS_").lower() in fields, f"{checker.ref(o)}: {name} is not a Settings field"
            else:
                assert name in checker.THIRD_PARTY_ENV, f"{checker.ref(o)}: unexpected env {name}"
            checked += 1
        # The literal values parse as the service would parse them.
        Settings(**{k.removeprefix("VIDEOJOBS_").lower(): v for k, v in env.items() if k.startswith("VIDEOJOBS_") and v is not None})
    assert checked > 20
    # Every key of the shared ConfigMap is a setting.
    for key in configmap_data(objects):
        assert key.startswith("VIDEOJOBS_") and key.removeprefix("VIDEOJOBS_").lower() in fields, key
    assert checker.settings_findings(objects) == []


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_production_adapters_are_configured(rendered, overlay: str) -> None:
    objects = rendered[overlay]
    cfg = configmap_data(objects)
    assert cfg["VIDEOJOBS_STORAGE_URL"].startswith("s3://")
    assert cfg["VIDEOJOBS_QUEUE_URL"].startswith("nats://")
    assert cfg["VIDEOJOBS_BIND_HOST"] == "0.0.0.0"
    worker = one(objects, "Deployment", "videojobs-worker")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert env["VIDEOJOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    assert env["VIDEOJOBS_MODEL"]["value"].startswith("/opt/videojobs/models/")
    for var, value in (("YOLO_OFFLINE", "1"), ("YOLO_AUTOINSTALL", "0"), ("OMP_THREAD_LIMIT", "1")):
        assert env[var]["value"] == value
    # Writable emptyDirs where the services write (the root filesystem is read-only).
    mounts = {m["mountPath"]: m["name"] for m in worker["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in worker["volumes"]}
    for path in (cfg["VIDEOJOBS_DATA_DIR"], env["VIDEOJOBS_MODEL_CACHE_DIR"]["value"], "/tmp"):
        mount = next(p for p in mounts if path == p or path.startswith(p + "/"))
        assert "emptyDir" in volumes[mounts[mount]], path


# ------------------------------------------------------------------ dev overlay
def test_dev_overlay_has_every_component_of_the_design(rendered) -> None:
    dev = rendered["dev"]
    for name in ("videojobs-api", "videojobs-gateway", "videojobs-worker"):
        one(dev, "Deployment", name)
        one(dev, "Service", name)
        one(dev, "ServiceAccount", name)
        one(dev, "PodDisruptionBudget", name)
    so = one(dev, "ScaledObject", "videojobs-worker")
    assert so["spec"]["triggers"][0]["type"] == "nats-jetstream"
    for name in ("postgres", "nats", "minio"):
        sts = one(dev, "StatefulSet", name)
        assert sts["spec"]["replicas"] == 1
        assert sts["spec"]["volumeClaimTemplates"], f"{name} has no PersistentVolumeClaim"
    nats = one(dev, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]
    assert "--jetstream" in nats["args"]
    job = one(dev, "Job", "videojobs-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    one(dev, "Ingress", "videojobs-gateway")
    # The bucket the Job creates is the one the services use.
    bucket_job = one(dev, "Job", "minio-create-bucket")
    bucket = configmap_data(dev)["VIDEOJOBS_STORAGE_URL"].removeprefix("s3://")
    assert f"local/{bucket}" in " ".join(bucket_job["spec"]["template"]["spec"]["containers"][0]["args"])
    # In-cluster services are where the ConfigMap points.
    cfg = configmap_data(dev)
    assert cfg["VIDEOJOBS_QUEUE_URL"] == "nats://nats:4222"
    assert cfg["VIDEOJOBS_S3_ENDPOINT"] == "minio:9000"


def test_migration_runs_before_the_api_serves(rendered) -> None:
    for objects in rendered.values():
        api = one(objects, "Deployment", "videojobs-api")["spec"]["template"]["spec"]
        (init,) = api["initContainers"]
        assert init["args"] == ["migrate"] and init["image"] == api["containers"][0]["image"]
        job = one(objects, "Job", "videojobs-migrate")["spec"]
        assert job["template"]["spec"]["containers"][0]["image"] == api["containers"][0]["image"]
        assert job["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_keda_scales_workers_on_the_consumer_backlog(rendered) -> None:
    for overlay, objects in rendered.items():
        cfg = configmap_data(objects)
        so = one(objects, "ScaledObject", "videojobs-worker")["spec"]
        meta = so["triggers"][0]["metadata"]
        assert so["scaleTargetRef"]["name"] == "videojobs-worker"
        assert meta["stream"] == cfg["VIDEOJOBS_NATS_STREAM"]
        assert meta["consumer"] == cfg["VIDEOJOBS_NATS_DURABLE"]
        assert int(meta["lagThreshold"]) >= 1 and meta["account"]
        assert re.fullmatch(r"[a-z0-9.-]+:8222", meta["natsServerMonitoringEndpoint"])
        assert so["maxReplicaCount"] > so["minReplicaCount"]
        # KEDA owns the replica count.
        assert "replicas" not in one(objects, "Deployment", "videojobs-worker")["spec"]
        # SIGTERM: the worker hands back its job within ~30 s; Kubernetes must wait longer.
        grace = one(objects, "Deployment", "videojobs-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= 45, overlay
        assert float(cfg["VIDEOJOBS_HEARTBEAT_SECONDS"]) < float(cfg["VIDEOJOBS_ACK_WAIT_SECONDS"])
    dev = one(rendered["dev"], "ScaledObject", "videojobs-worker")["spec"]
    assert dev["minReplicaCount"] == 0, "dev scales to zero"
    ns = one(rendered["dev"], "Namespace", "videojobs")["metadata"]["name"]
    assert dev["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"] == f"nats.{ns}.svc.cluster.local:8222"
    assert one(rendered["prod"], "ScaledObject", "videojobs-worker")["spec"]["minReplicaCount"] >= 1


# ------------------------------------------------------------------ network policies
def _ingress_rules_for(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    rules = []
    for np in by(objects, "NetworkPolicy"):
        if "Ingress" in np["spec"]["policyTypes"] and checker._labels_match(np["spec"]["podSelector"], labels):
            rules += np["spec"].get("ingress", [])
    return rules


def _allowed_components(rules: list[dict[str, Any]]) -> set[str]:
    out = set()
    for rule in rules:
        for peer in rule.get("from", []):
            sel = peer.get("podSelector")
            if sel is None or "namespaceSelector" in peer:
                out.add("<other namespace>")
                continue
            for comp in ("api", "gateway", "worker", "migrate", "minio-setup", "postgres", "nats", "minio"):
                name = "minio" if comp == "minio-setup" else "videojobs"
                if checker._labels_match(sel, {"app.kubernetes.io/name": name, "app.kubernetes.io/component": comp}):
                    out.add(comp)
    return out


def test_network_policies_allow_only_the_needed_paths(rendered) -> None:
    for overlay, objects in rendered.items():
        deny = one(objects, "NetworkPolicy", "default-deny-ingress")["spec"]
        assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
        workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
        for w in workloads:
            labels = w["spec"]["template"]["metadata"]["labels"]
            rules = _ingress_rules_for(objects, labels)
            comp = labels["app.kubernetes.io/component"]
            from_ns = [p for r in rules for p in r.get("from", []) if "namespaceSelector" in p]
            if comp == "gateway":
                assert from_ns and all(
                    p["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"} for p in from_ns
                )
            elif comp == "api":
                # Internal gRPC clients only: the gateway and namespaces labelled as clients.
                assert "gateway" in _allowed_components(rules)
                assert all(p["namespaceSelector"]["matchLabels"] == {"videojobs.io/grpc-client": "true"} for p in from_ns)
            elif comp == "worker":
                assert rules == [], "nothing connects to a worker"
        # Nothing may allow everything.
        for np in by(objects, "NetworkPolicy"):
            for rule in np["spec"].get("ingress", []):
                assert rule.get("from"), f"{overlay} {np['metadata']['name']}: ingress rule without `from`"
    dev = rendered["dev"]
    expected = {"postgres": {"api", "worker", "migrate"}, "nats": {"api", "worker", "<other namespace>"}, "minio": {"api", "worker", "minio-setup"}}
    for name, allowed in expected.items():
        labels = one(dev, "StatefulSet", name)["spec"]["template"]["metadata"]["labels"]
        assert _allowed_components(_ingress_rules_for(dev, labels)) == allowed, name
    gw_egress = one(dev, "NetworkPolicy", "videojobs-gateway-egress")["spec"]["egress"]
    assert _allowed_components([{"from": r["to"]} for r in gw_egress[:1]]) == {"api"}


# ------------------------------------------------------------------ prod overlay
def test_prod_uses_external_services_more_replicas_and_hpa(rendered) -> None:
    prod = rendered["prod"]
    assert by(prod, "StatefulSet") == [], "no in-cluster databases in prod"
    cfg = configmap_data(prod)
    assert cfg["VIDEOJOBS_QUEUE_URL"] != configmap_data(rendered["dev"])["VIDEOJOBS_QUEUE_URL"]
    assert cfg["VIDEOJOBS_S3_SECURE"] == "true"
    for name in ("videojobs-api", "videojobs-gateway"):
        hpa = one(prod, "HorizontalPodAutoscaler", name)["spec"]
        assert hpa["scaleTargetRef"]["name"] == name
        assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"
        assert "replicas" not in one(prod, "Deployment", name)["spec"]
    for o in prod:
        if o["kind"] == "Deployment":
            image = o["spec"]["template"]["spec"]["containers"][0]["image"]
            assert image.startswith("registry.example.com/"), image
    assert one(prod, "Ingress", "videojobs-gateway")["spec"]["tls"]


# ------------------------------------------------------ a broken manifest fails the check
def _broken_copy(tmp_path: Path) -> Path:
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s)
    return k8s


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_checker_fails_on_a_container_without_limits(tmp_path: Path, kubectl: Path) -> None:
    k8s = _broken_copy(tmp_path)
    gateway = k8s / "base" / "gateway.yaml"
    docs = list(yaml.safe_load_all(gateway.read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    del deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    gateway.write_text(yaml.safe_dump_all(docs))
    proc = run_checker("--k8s-dir", str(k8s))
    assert proc.returncode == 1, proc.stdout
    assert "Deployment/videojobs-gateway container gateway: no resources.limits" in proc.stdout
    assert "k8s-check: FAILED" in proc.stdout


def test_checker_fails_on_an_invalid_field(tmp_path: Path, kubectl: Path) -> None:
    k8s = _broken_copy(tmp_path)
    _edit(k8s / "base" / "worker.yaml", "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replicaz: 3\n")
    proc = run_checker("--k8s-dir", str(k8s))
    assert proc.returncode == 1, proc.stdout
    assert "Deployment/videojobs-worker: schema: spec: Additional properties are not allowed ('replicaz'" in proc.stdout


def test_checker_fails_on_an_invalid_scaledobject(tmp_path: Path, kubectl: Path) -> None:
    k8s = _broken_copy(tmp_path)
    _edit(k8s / "components" / "keda-worker" / "scaledobject.yaml", '        lagThreshold: "2"\n', "        lagThreshold: 2\n")
    proc = run_checker("--k8s-dir", str(k8s))
    assert proc.returncode == 1, proc.stdout
    assert "ScaledObject/videojobs-worker: schema: spec.triggers.0.metadata.lagThreshold" in proc.stdout


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("      - VIDEOJOBS_LOG_LEVEL=INFO\n", "      - VIDEOJOBS_LOG_LEVEL=INFO\n      - VIDEOJOBS_NO_SUCH_SETTING=1\n",
         "VIDEOJOBS_NO_SUCH_SETTING is not a field of videojobs.common.config.Settings"),
        ("      - VIDEOJOBS_GRPC_PORT=50051\n", "      - VIDEOJOBS_GRPC_PORT=grpc\n", "settings do not parse: ('grpc_port',)"),
        ("      - VIDEOJOBS_LOG_LEVEL=INFO\n", "      - VIDEOJOBS_LOG_LEVEL=INFO\n      - VIDEOJOBS_S3_SECRET_KEY=minioadmin\n",
         "key VIDEOJOBS_S3_SECRET_KEY looks like a credential"),
    ],
    ids=["unknown-setting", "unparsable-value", "plaintext-secret"],
)
def test_checker_fails_on_bad_settings(tmp_path: Path, kubectl: Path, old: str, new: str, message: str) -> None:
    k8s = _broken_copy(tmp_path)
    _edit(k8s / "base" / "kustomization.yaml", old, new)
    proc = run_checker("--k8s-dir", str(k8s))
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stdout


def test_checker_fails_on_root_latest_and_missing_probe(tmp_path: Path, kubectl: Path) -> None:
    k8s = _broken_copy(tmp_path)
    nats = k8s / "components" / "in-cluster-backends" / "nats.yaml"
    _edit(nats, "image: nats:2.10.24\n", "image: nats:latest\n")
    _edit(nats, "        runAsNonRoot: true\n        runAsUser: 1000\n", "        runAsUser: 0\n")
    api = k8s / "base" / "api.yaml"
    docs = list(yaml.safe_load_all(api.read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    del deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    api.write_text(yaml.safe_dump_all(docs))
    proc = run_checker("--k8s-dir", str(k8s))
    assert proc.returncode == 1
    assert "StatefulSet/nats container nats: image 'nats:latest' uses the `latest` tag" in proc.stdout
    assert "StatefulSet/nats container nats: runAsUser is 0 (root)" in proc.stdout
    assert "Deployment/videojobs-api container api: no livenessProbe" in proc.stdout


def test_checker_fails_with_a_clear_message_without_kubectl(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "k8s_check.py"), "--kubectl", str(tmp_path / "kubectl")],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2 and "make k8s-tools" in proc.stdout


# --------------------------------------------------------------------------- images
def test_dockerfile_passes_the_checks() -> None:
    assert checker.dockerfile_findings(DOCKERFILE, ROOT) == []


def test_dockerfile_targets_share_one_package_and_run_non_root() -> None:
    args, stages = checker.parse_dockerfile(DOCKERFILE.read_text())
    names = {s.name: s for s in stages}
    assert {"build-service", "build-worker", "runtime", "api", "gateway", "worker"} <= set(names)
    for target in ("api", "gateway", "worker"):
        assert names[target].base == "runtime", "every service image derives from the one shared runtime"
        instrs = dict(names[target].instructions)
        assert instrs["USER"] == "10001:10001"
        assert "HEALTHCHECK" in instrs
        copies = [rest for i, rest in names[target].instructions if i == "COPY"]
        assert not any("libs" in c or "services" in c for c in copies), "shared code is not copied per service"
    # One package, two virtualenvs: the services without the ML stack, the worker with it.
    assert "pip install ." in " ".join(r for i, r in names["build-service"].instructions if i == "RUN")
    assert "'.[worker]'" in " ".join(r for i, r in names["build-worker"].instructions if i == "RUN")
    for target, build in (("api", "build-service"), ("gateway", "build-service"), ("worker", "build-worker")):
        copies = [rest for i, rest in names[target].instructions if i == "COPY"]
        assert f"--from={build} /opt/venv /opt/venv" in copies, (target, copies)
    base = checker._expand(stages[0].base, args)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    # The user the manifests run as is the image's user.
    assert "--uid 10001" in " ".join(r for i, r in names["runtime"].instructions if i == "RUN")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("USER 10001:10001\nEXPOSE 8080", "USER root\nEXPOSE 8080", "target gateway: runs as root"),
        ("ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm", "ARG PYTHON_IMAGE=python:latest", "uses the `latest` tag"),
        ("COPY deploy/docker/healthcheck.py", "COPY deploy/docker/missing.py", "source deploy/docker/missing.py does not exist"),
        ("COPY libs ./libs", "COPY tests ./libs", "source tests is excluded by .dockerignore"),
        ("HEALTHCHECK --interval=30s --timeout=5s --start-period=60s", "LABEL x=y", "target worker: no HEALTHCHECK"),
        ("tesseract-ocr tesseract-ocr-eng", "tesseract-ocr", "apt package tesseract-ocr-eng not installed"),
    ],
    ids=["root", "latest", "missing-copy-source", "ignored-copy-source", "no-healthcheck", "no-ocr-language"],
)
def test_dockerfile_checks_catch_breakage(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    findings = [str(f) for f in checker.dockerfile_findings(broken, ROOT)]
    assert any(message in f for f in findings), findings


def test_dockerignore_keeps_only_what_the_images_need() -> None:
    patterns = checker.dockerignore_excludes(ROOT)
    for path in ("pyproject.toml", "libs/common/videojobs/cli.py", "services/api", "deploy/docker/healthcheck.py"):
        assert checker.in_build_context(path, patterns), path
    for path in (".venv/bin/python", ".tools/bin/kubectl", "tests/unit", ".git/HEAD", "var/videojobs.db",
                 "libs/common/videojobs/__pycache__/cli.cpython-311.pyc"):
        assert not checker.in_build_context(path, patterns), path


def test_model_is_fetched_at_build_time_only_with_a_matching_checksum(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "yolov8n_fp32.onnx"
    fetch_model.fetch(model.as_uri(), digest, str(dest))
    assert dest.read_bytes() == model.read_bytes()
    with pytest.raises(SystemExit, match="sha256 mismatch"):
        fetch_model.fetch(model.as_uri(), "0" * 64, str(tmp_path / "bad.onnx"))
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "bad.onnx.part").exists()
    with pytest.raises(SystemExit, match="MODEL_SHA256"):
        fetch_model.fetch(model.as_uri(), "", str(tmp_path / "x.onnx"))


def test_image_healthcheck_reads_grpc_health() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert healthcheck.main(["grpc", target]) == 0
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert healthcheck.main(["grpc", target]) == 1
        assert healthcheck.main(["grpc", target, "videojobs.v1.JobService"]) == 1  # unknown service
        assert healthcheck.main(["http", "http://127.0.0.1:1/healthz"]) == 1
        assert healthcheck.main([]) == 2
    finally:
        server.stop(None).wait()
