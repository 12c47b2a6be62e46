"""The README's commands work verbatim.

Its fenced `sh` and `python` blocks are run as written, from the checkout root,
against `videojobs serve` on the ports the README names (8080, 50051) — except the
set-up block, which must hold exactly the two commands (`make run`, `make test`;
CI runs the second) — and commands that start or stop servers themselves (`make up`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
SERVER_COMMANDS = ("make run", "make test", "make up", "make down", "make serve")


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == kind]


def commands(block: str) -> list[str]:
    return [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]


def test_the_setup_block_is_exactly_the_two_commands():
    setup = [b for b in blocks("sh") if any(c in b for c in ("make run", "make test"))]
    assert len(setup) == 1 and commands(setup[0]) == ["make run", "make test"]


@pytest.fixture(scope="module")
def readme_service(tmp_path_factory, model_cache):
    """`videojobs serve` as `make run` starts it: the checkout's .env, the default ports."""
    assert (REPO / ".env").is_file(), "make install writes .env; the README's commands rely on it"
    data = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "VIDEOJOBS_DATA_DIR": str(data), "VIDEOJOBS_MODEL_CACHE_DIR": str(model_cache)}
    env.pop("VIDEOJOBS_MODEL", None)  # from .env, as for a user
    log = open(data / "serve.log", "w")
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "videojobs"), "serve"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, "serve exited (ports 8080/50051 taken?):\n" + (data / "serve.log").read_text()
        try:
            if httpx.get("http://localhost:8080/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline, (data / "serve.log").read_text()
        time.sleep(0.3)
    yield proc
    proc.terminate()
    proc.wait(60)
    log.close()


def run(script: str, interpreter: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(interpreter, input=script, text=True, capture_output=True, cwd=REPO, timeout=timeout)
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def test_shell_blocks_run_verbatim(readme_service):
    ran = 0
    for block in blocks("sh"):
        if any(c in block for c in SERVER_COMMANDS):
            continue
        out = run("set -eu\n" + block, ["bash"]).stdout
        ran += 1
        if "/video/submit" in block:  # the walk-through
            assert '"status":"COMPLETED"' in out or '"status": "COMPLETED"' in out, out[-3000:]
            assert '"detections"' in out and '"bottle"' in out and '"pipelines"' in out
            assert '"type":"/problems/invalid-job-id"' in out
        if "videojobs analyze" in block:
            assert '"schema_version": 2' in out and '"sampling"' in out
    assert ran >= 2


def test_python_blocks_run_verbatim(readme_service):
    python_blocks = blocks("python")
    assert python_blocks
    for block in python_blocks:
        out = run(block, [sys.executable, "-"]).stdout
        assert "job_id:" in out and "pipeline_id" in out


def test_referenced_files_exist():
    text = README.read_text()
    for path in re.findall(r"`((?:libs|services|scripts|deploy|tests)/[\w./-]+)`", text):
        assert (REPO / path).exists(), path
    assert Path(REPO.parent / "shared" / "media" / "bottle-detection.mp4").is_file()
