"""The Kubernetes deployment (deploy/k8s) and the images' Dockerfile, checked offline.

Renders every overlay with the kubectl that `make k8s-tools` puts in .tools/bin and
runs the checkov it installs in .tools/checkov (`make test` runs it first, through
k8s-check); a missing kubectl or checkov fails these tests.
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
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"


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
def checkov() -> Path:
    if not CHECKOV.is_file():
        pytest.fail(f"checkov not found at {CHECKOV}: run `make k8s-tools` (make test and make k8s-check install it)")
    return CHECKOV


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
        [sys.executable, str(ROOT / "scripts" / "k8s_check.py"), "--kubectl", str(KUBECTL), "--checkov", str(CHECKOV), *args],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )


# ------------------------------------------------------------------ the checker passes
def test_overlays_are_dev_and_prod() -> None:
    assert [o.name for o in checker.overlays(K8S)] == ["dev", "prod"]


def test_k8s_check_passes_on_the_repository(checks) -> None:
    repo = checks["repo"]
    assert [str(e) for e in repo.errors] == []
    assert [o.name for o in repo.overlays] == ["dev", "prod"]
    assert all(f and len(f.passed) > 200 for f in [*(o.checkov for o in repo.overlays), repo.dockerfile_checkov])


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
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), key


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
    # The detector's threads follow the container's CPU limit (minus a core for decode and OCR).
    limit = env["VIDEOJOBS_CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]
    assert limit["resource"] == "limits.cpu" and limit["containerName"] == worker["containers"][0]["name"]
    assert worker["containers"][0]["resources"]["limits"]["cpu"]
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
METRICS_POLICY = "videojobs-metrics-ingress"


def _ingress_rules_for(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Ingress rules that select these pods, except Prometheus' scrape path (checked on its own)."""
    rules = []
    for np in by(objects, "NetworkPolicy"):
        if np["metadata"]["name"] == METRICS_POLICY:
            continue
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
        # Prometheus (namespace `monitoring`) reaches the metrics ports of videojobs pods, nothing else.
        metrics = one(objects, "NetworkPolicy", METRICS_POLICY)["spec"]
        assert metrics["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "videojobs"}}
        (rule,) = metrics["ingress"]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        assert sorted(p["port"] for p in rule["ports"]) == [8080, 9464]
        for w in (o for o in objects if o["kind"] == "Deployment"):
            annotations = w["spec"]["template"]["metadata"].get("annotations", {})
            assert annotations.get("prometheus.io/scrape") == "true", w["metadata"]["name"]
            ports = {p["containerPort"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            assert int(annotations["prometheus.io/port"]) in ports
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


# ------------------------------------------------------ a broken copy fails the check
# Every broken copy is checked in one batch (one checkov run: it takes seconds to start).
def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _edit_doc(path: Path, kind: str, change) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    change(next(d for d in docs if d["kind"] == kind))
    path.write_text(yaml.safe_dump_all(docs))


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _root_latest_no_probe(k8s: Path) -> None:
    nats = k8s / "components" / "in-cluster-backends" / "nats.yaml"
    _edit(nats, "image: nats:2.10.24\n", "image: nats:latest\n")
    _edit(nats, "        runAsNonRoot: true\n        runAsUser: 10020\n", "        runAsUser: 0\n")
    _edit_doc(k8s / "base" / "api.yaml", "Deployment", lambda d: _container(d).pop("livenessProbe"))


KUSTOMIZATION = ("base", "kustomization.yaml")
# name -> how the copy of deploy/k8s is broken
K8S_BREAKAGE = {
    "no-limits": lambda k8s: _edit_doc(k8s / "base" / "gateway.yaml", "Deployment", lambda d: _container(d)["resources"].pop("limits")),
    "invalid-field": lambda k8s: _edit(k8s / "base" / "worker.yaml", "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replicaz: 3\n"),
    "numeric-lagThreshold": lambda k8s: _edit(
        k8s / "components" / "keda-worker" / "scaledobject.yaml", '        lagThreshold: "2"\n', "        lagThreshold: 2\n"),
    "unknown-setting": lambda k8s: _edit(
        k8s.joinpath(*KUSTOMIZATION), "      - VIDEOJOBS_LOG_LEVEL=INFO\n", "      - VIDEOJOBS_LOG_LEVEL=INFO\n      - VIDEOJOBS_NO_SUCH_SETTING=1\n"),
    "unparsable-value": lambda k8s: _edit(k8s.joinpath(*KUSTOMIZATION), "      - VIDEOJOBS_GRPC_PORT=50051\n", "      - VIDEOJOBS_GRPC_PORT=grpc\n"),
    "plaintext-secret": lambda k8s: _edit(
        k8s.joinpath(*KUSTOMIZATION), "      - VIDEOJOBS_LOG_LEVEL=INFO\n", "      - VIDEOJOBS_LOG_LEVEL=INFO\n      - VIDEOJOBS_S3_SECRET_KEY=minioadmin\n"),
    "credentials-in-url": lambda k8s: _edit(
        k8s.joinpath(*KUSTOMIZATION), "      - VIDEOJOBS_QUEUE_URL=nats://nats:4222\n", "      - VIDEOJOBS_QUEUE_URL=nats://videojobs:s3cr3t-pass@nats:4222\n"),
    "root-latest-no-probe": _root_latest_no_probe,
    "unbounded-upload-spool": lambda k8s: _edit(k8s.joinpath(*KUSTOMIZATION), "      - VIDEOJOBS_UPLOAD_SPOOL_BYTES=1610612736\n", ""),
    "unbounded-model-cache": lambda k8s: _edit(k8s / "base" / "worker.yaml",
                                               "            - name: VIDEOJOBS_MODEL_CACHE_BYTES\n              value: \"805306368\"\n", ""),
    "spool-past-tmp": lambda k8s: _edit(k8s.joinpath(*KUSTOMIZATION), "VIDEOJOBS_UPLOAD_SPOOL_BYTES=1610612736",
                                        "VIDEOJOBS_UPLOAD_SPOOL_BYTES=4294967296"),
    "suppressed-in-place": lambda k8s: _edit_doc(
        k8s / "base" / "gateway.yaml", "Deployment", lambda d: d["metadata"].setdefault("annotations", {}).update(
            {"checkov.io/skip1": "CKV_K8S_8=probed elsewhere"})),
}
# name -> (text of the Dockerfile, its replacement)
DOCKERFILE_BREAKAGE = {
    "root": ("USER 10001:10001\nEXPOSE 8080", "USER root\nEXPOSE 8080"),
    "latest": ("ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm", "ARG PYTHON_IMAGE=python:latest"),
    "add-instead-of-copy": ("COPY deploy/docker/healthcheck.py", "ADD deploy/docker/healthcheck.py"),
    "missing-copy-source": ("COPY deploy/docker/healthcheck.py", "COPY deploy/docker/missing.py"),
    "ignored-copy-source": ("COPY libs ./libs", "COPY tests ./libs"),
    "no-healthcheck": ("HEALTHCHECK --interval=30s --timeout=5s --start-period=60s", "LABEL x=y"),
    "no-ocr-language": ("tesseract-ocr tesseract-ocr-eng", "tesseract-ocr"),
}


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory, kubectl: Path, checkov: Path) -> dict[str, Any]:
    """Reports of the repository ("repo") and of every broken copy, from one checkov run.
    The copies are checked in the dev overlay alone: it renders every file they break."""
    trees = {"repo": checker.Tree()}
    for name, breakage in K8S_BREAKAGE.items():
        k8s = tmp_path_factory.mktemp(name) / "k8s"
        shutil.copytree(K8S, k8s)
        breakage(k8s)
        trees[name] = checker.Tree(k8s_dir=k8s, dockerfile=None, only=("dev",))
    text = DOCKERFILE.read_text()
    for name, (old, new) in DOCKERFILE_BREAKAGE.items():
        assert old in text, old
        broken = tmp_path_factory.mktemp(name) / "Dockerfile"
        broken.write_text(text.replace(old, new, 1))
        trees[f"dockerfile-{name}"] = checker.Tree(k8s_dir=None, dockerfile=broken)
    return checker.check_trees(trees, kubectl, checkov)


def messages(report: Any) -> list[str]:
    return [str(e) for e in report.errors]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-limits", ["dev Deployment/videojobs-gateway: checkov CKV_K8S_11 CPU limits should be set",
                       "dev Deployment/videojobs-gateway: checkov CKV_K8S_13 Memory limits should be set"]),
        ("invalid-field", ["Deployment/videojobs-worker: schema: spec: Additional properties are not allowed ('replicaz'"]),
        ("numeric-lagThreshold", ["ScaledObject/videojobs-worker: schema: spec.triggers.0.metadata.lagThreshold"]),
        ("unknown-setting", ["VIDEOJOBS_NO_SUCH_SETTING is not a field of videojobs.common.config.Settings"]),
        ("unparsable-value", ["settings do not parse: ('grpc_port',)"]),
        ("plaintext-secret", ["key VIDEOJOBS_S3_SECRET_KEY looks like a credential"]),
        ("credentials-in-url", ["checkov CKV_SECRET_4 Basic Auth Credentials"]),
        ("root-latest-no-probe", ["dev StatefulSet/nats: checkov CKV_K8S_14 Image Tag should be fixed - not latest or blank",
                                  "dev StatefulSet/nats: checkov CKV_K8S_40 Containers should run as a high UID",
                                  "dev Deployment/videojobs-api: checkov CKV_K8S_8 Liveness Probe Should be Configured"]),
        ("unbounded-upload-spool", ["Deployment/videojobs-gateway gateway: VIDEOJOBS_UPLOAD_SPOOL_BYTES=0 must be set"]),
        ("spool-past-tmp", ["VIDEOJOBS_UPLOAD_SPOOL_BYTES=4294967296 must be set, and at most 100% of the sizeLimit "
                            "of /tmp (2Gi)"]),
        ("unbounded-model-cache", ["Deployment/videojobs-worker worker: VIDEOJOBS_MODEL_CACHE_BYTES=0 must be set, "
                                   "and at most 75% of the sizeLimit of /var/cache/videojobs/models (1Gi)"]),
        ("suppressed-in-place", ["dev Deployment/videojobs-gateway: checkov CKV_K8S_8 suppressed in place (probed elsewhere)"]),
    ],
)
def test_a_broken_manifest_fails_the_check(checks, case: str, expected: list[str]) -> None:
    found = messages(checks[case])
    for message in expected:
        assert any(message in f for f in found), (message, found)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("root", "target gateway: runs as root"),
        ("latest", "Dockerfile:20: checkov CKV_DOCKER_7 Ensure the base image uses a non latest version tag"),
        ("add-instead-of-copy", "checkov CKV_DOCKER_4 Ensure that COPY is used instead of ADD"),
        ("missing-copy-source", "source deploy/docker/missing.py does not exist"),
        ("ignored-copy-source", "source tests is excluded by .dockerignore"),
        ("no-healthcheck", "target worker: no HEALTHCHECK"),
        ("no-ocr-language", "apt package tesseract-ocr-eng not installed"),
    ],
)
def test_dockerfile_checks_catch_breakage(checks, case: str, message: str) -> None:
    found = messages(checks[f"dockerfile-{case}"])
    assert any(message in f for f in found), found


# The rules scripts/k8s_check.py used to hand-write, and the checkov checks that own them now
# (the same table is in deploy/README.md).
CHECKOV_OWNS: dict[str, tuple[str, ...]] = {
    "liveness probe on Deployments and StatefulSets": ("CKV_K8S_8",),
    "readiness probe on Deployments and StatefulSets": ("CKV_K8S_9",),
    "cpu and memory requests": ("CKV_K8S_10", "CKV_K8S_12"),
    "cpu and memory limits": ("CKV_K8S_11", "CKV_K8S_13"),
    "image pinned to a tag, never `latest`": ("CKV_K8S_14",),
    "runAsNonRoot, never UID 0": ("CKV_K8S_23", "CKV_K8S_40"),
    "readOnlyRootFilesystem": ("CKV_K8S_22",),
    "allowPrivilegeEscalation: false": ("CKV_K8S_20",),
    "not privileged": ("CKV_K8S_16",),
    "capabilities drop ALL": ("CKV_K8S_37", "CKV_K8S_28"),
    "no added capabilities": ("CKV_K8S_25", "CKV_K8S_39"),
    "seccomp RuntimeDefault (was asserted by the tests only)": ("CKV_K8S_31",),
    "no hostNetwork, hostPID, hostIPC": ("CKV_K8S_19", "CKV_K8S_17", "CKV_K8S_18"),
    "automountServiceAccountToken: false": ("CKV_K8S_38",),
    "no credentials in URLs (ConfigMap and env values)": ("CKV_SECRET_4",),
    "Dockerfile base images pinned, never `latest`": ("CKV_DOCKER_7",),
    "Dockerfile: no ADD (of a URL)": ("CKV_DOCKER_4",),
}


def test_checkov_owns_the_rules_that_were_hand_written(checks) -> None:
    ids = {i for ids in CHECKOV_OWNS.values() for i in ids}
    assert not ids & set(checker.skipped_checks()), "a check that replaced a hand-written one is skipped"
    # Each one runs on our files: it passes (on the parts of the copies that are not broken),
    # or it catches a broken copy (CKV_DOCKER_4 looks only at ADD, which the Dockerfile has
    # none of; secrets checks report findings only).
    files = [f for r in checks.values() for f in [*(o.checkov for o in r.overlays), r.dockerfile_checkov] if f]
    passed = {i for f in files for i in f.passed}
    caught = {e.message.split()[1] for r in checks.values() for e in r.errors if e.message.startswith("checkov ")}
    assert ids <= passed | caught, ids - passed - caught


def test_every_skipped_check_has_a_reason() -> None:
    lines = (ROOT / "deploy" / "checkov.yaml").read_text().splitlines()
    skipped = checker.skipped_checks()
    assert skipped, "deploy/checkov.yaml skips nothing: drop this test's premise"
    for check in skipped:
        (at,) = [n for n, line in enumerate(lines) if line.strip() == f"- {check}"]
        assert lines[at - 1].strip().startswith("# ") and len(lines[at - 1]) > 40, f"{check}: no reason on the line above"


def test_checker_command_exits_1_on_a_broken_copy(tmp_path: Path, kubectl: Path, checkov: Path) -> None:
    # `make k8s-check` runs the command on the repository (exit 0) before the tests.
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s)
    K8S_BREAKAGE["no-limits"](k8s)
    proc = run_checker("--k8s-dir", str(k8s))
    assert proc.returncode == 1, proc.stdout
    for overlay in ("dev", "prod"):
        assert f"ERROR {overlay} Deployment/videojobs-gateway: checkov CKV_K8S_11 CPU limits should be set" in proc.stdout
    assert "checkov 3." in proc.stdout and "k8s-check: FAILED" in proc.stdout


@pytest.mark.parametrize("tool", ["--kubectl", "--checkov"])
def test_checker_fails_with_a_clear_message_without_a_tool(tmp_path: Path, tool: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "k8s_check.py"), tool, str(tmp_path / "missing")],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2 and "make k8s-tools" in proc.stdout


# --------------------------------------------------------------------------- images
def test_dockerfile_passes_the_checks() -> None:
    assert checker.dockerfile_findings(DOCKERFILE, ROOT) == []


def test_checkov_reads_the_dockerfile_with_its_arg_defaults() -> None:
    text = DOCKERFILE.read_text()
    given = checker.dockerfile_for_checkov(text)
    assert len(given.splitlines()) == len(text.splitlines())
    froms = [ln for ln in given.splitlines() if ln.startswith("FROM ")]
    assert froms and all("$" not in ln for ln in froms), froms
    assert "FROM python:3.11.11-slim-bookworm AS runtime" in froms


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
    dest = tmp_path / "out" / "yolov8n.pt"
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
