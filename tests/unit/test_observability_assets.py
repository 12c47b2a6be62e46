"""The alert rules and the Grafana dashboard name only metrics the services register.

(`make observability-check` also runs `promtool check rules` and `promtool test rules`.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

# Every service's metrics module, so the registry holds all of them.
import videojobs.api.metrics  # noqa: F401
import videojobs.common.observability.metrics  # noqa: F401
import videojobs.gateway.metrics  # noqa: F401
import videojobs.worker.metrics  # noqa: F401

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "components" / "monitoring"
METRIC_NAME = re.compile(r"\bvideojobs_[a-z0-9_]+\b")
# Inside label matchers and legends, words like videojobs_* never appear as label values here.
LABELS_OF = {
    "videojobs_jobs_unfinished": {"status"},
    "videojobs_jobs_finished_total": {"pipeline", "status"},
}


def registered_samples() -> dict[str, set[str]]:
    """Sample name (as PromQL sees it: _total, _bucket, _sum, _count) -> its label names."""
    samples: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("videojobs_"):
            continue
        labels = set(getattr(REGISTRY._names_to_collectors.get(family.name), "_labelnames", ()) or ())
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}[family.type]
        for suffix in suffixes:
            samples[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return samples


def rule_expressions() -> list[tuple[str, str]]:
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    dash = json.loads((MONITORING / "dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]


def test_the_registry_holds_the_metrics_the_issue_asks_for():
    samples = registered_samples()
    for name in ["videojobs_jobs_submitted_total", "videojobs_jobs_finished_total", "videojobs_job_duration_seconds_count",
                 "videojobs_job_queue_wait_seconds_count", "videojobs_frames_analysed_total",
                 "videojobs_stage_seconds_count", "videojobs_queue_depth", "videojobs_outbox_backlog",
                 "videojobs_oldest_pending_job_age_seconds", "videojobs_upload_bytes_total",
                 "videojobs_upload_refusals_total", "videojobs_worker_threads", "videojobs_worker_busy_threads",
                 "videojobs_http_requests_total", "videojobs_http_request_duration_seconds_bucket",
                 "videojobs_grpc_server_handled_total", "videojobs_grpc_server_handling_seconds_bucket"]:
        assert name in samples, name
    # No label could hold a job id: bounded label names only.
    allowed = {"pipeline", "status", "stage", "reason", "method", "route", "grpc_service", "grpc_method",
               "grpc_code", "gate", "le"}
    for name, labels in samples.items():
        assert labels <= allowed, (name, labels - allowed)


@pytest.mark.parametrize("source", [rule_expressions, dashboard_expressions], ids=["alert rules", "dashboard"])
def test_every_metric_named_is_registered(source):
    samples = registered_samples()
    expressions = source()
    assert expressions
    named = set()
    for where, expr in expressions:
        for name in METRIC_NAME.findall(expr):
            named.add(name)
            assert name in samples, f"{where}: {name} is not a registered metric sample"
        # label matchers and groupings name labels the metric has
        for name, labels in LABELS_OF.items():
            for matcher in re.findall(rf"{name}\{{([^}}]*)\}}", expr):
                for label in re.findall(r"([a-z_]+)\s*[=!~]", matcher):
                    assert label in labels, f"{where}: {name} has no label {label}"
    assert len(named) >= 8


def test_alert_rules_cover_the_operators_questions():
    alerts = dict(rule_expressions())
    text = "\n".join(alerts.values())
    for metric in ["videojobs_jobs_unfinished", "videojobs_jobs_lease_expired", "videojobs_outbox_oldest_age_seconds",
                   "videojobs_jobs_finished_total", "videojobs_worker_threads"]:
        assert metric in text, metric
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    for rule in (r for g in doc["groups"] for r in g["rules"]):
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_panels_have_queries_and_a_prometheus_datasource():
    dash = json.loads((MONITORING / "dashboard.json").read_text())
    titles = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert titles == ["Overview", "Throughput", "Backlog", "Latency", "Failures", "Stage times"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["type"] == "prometheus"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
