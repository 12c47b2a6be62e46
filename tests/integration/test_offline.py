"""The worker's analysis stays off the network by itself, whatever the environment says: an OpenVINO export
(which runs OpenVINO's converter) writes no telemetry client id and forks no telemetry sender, and
Ultralytics stays offline, with no YOLO_OFFLINE / YOLO_AUTOINSTALL / CI in the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.integration.conftest_pipeline import MODEL_PATH, REPO_ROOT, model_path  # noqa: F401

EXPORT = """
import json, os, sys
from pathlib import Path
from videojobs.worker.pipeline.service import VideoFilePipelineService
svc = VideoFilePipelineService(model=sys.argv[1], model_cache_dir=sys.argv[2], detector_backend="openvino")
svc.detector.load()
info = svc.detector.prepare((360, 640), 640)
import ultralytics.utils
children = [p for p in Path("/proc").iterdir() if p.name.isdigit()
            and (p / "stat").read_text().split(") ")[-1].split()[1] == str(os.getpid())]
print(json.dumps({"backend": info["backend"], "online": ultralytics.utils.ONLINE, "children": len(children),
                  "yolo_offline": os.environ.get("YOLO_OFFLINE")}))
"""


def test_an_openvino_export_sends_no_telemetry_and_ultralytics_stays_offline(tmp_path, model_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "YOLO_OFFLINE", "YOLO_AUTOINSTALL", "TF_BUILD",
                                                             "JENKINS_URL"}}
    env.update(HOME=str(home), YOLO_CONFIG_DIR=str(tmp_path / "ultralytics"))
    run = subprocess.run([sys.executable, "-c", EXPORT, str(model_path), str(tmp_path / "cache")], env=env,
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == "openvino" and any((tmp_path / "cache").iterdir()), "an OpenVINO model was exported"
    assert not (home / "intel").exists(), "OpenVINO's telemetry wrote its client id"
    assert out["children"] == 0, "a telemetry sender was forked"
    assert out["online"] is False and out["yolo_offline"] == "1"
