import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("governance_scan", ROOT / "scripts" / "governance_scan.py")
scanner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scanner)


def test_repository_is_clean():
    assert scanner.scan(ROOT, scanner.load_vocabulary()) == []


@pytest.mark.parametrize("rel, text, expected", [
    ("services/api/videojobs/api/push.py", "from fastapi import WebSocket\n", "forbidden vocabulary"),
    ("libs/common/videojobs/common/x.py", "media_type='text/event-stream'\n", "forbidden vocabulary"),
    ("deploy/k8s/x.yaml", "resources: {limits: {nvidia.com/gpu: 1}}\n", "forbidden vocabulary"),
    ("protos/videojobs/v1/x.proto", "// live streaming of frames\n", "forbidden vocabulary"),
    ("services/worker/phase16_worker.py", "x = 1\n", "phase-named"),
    ("tests/phase-16/test_x.py", "x = 1\n", "phase-named"),
])
def test_scanner_flags_violations(tmp_path, rel, text, expected):
    target = tmp_path / rel
    target.parent.mkdir(parents=True)
    target.write_text(text)
    findings = scanner.scan(tmp_path, scanner.load_vocabulary())
    assert len(findings) == 1 and expected in findings[0]


def test_phase_notes_are_allowed_where_they_belong(tmp_path):
    for rel in (".ampcode/phase-16.md", "scripts/phase16_checklist.sh", "services/api/assess.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("assert classes  # not the forbidden word\n")
    assert scanner.scan(tmp_path, scanner.load_vocabulary()) == []
