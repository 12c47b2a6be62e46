"""Shared pytest fixtures."""

import pytest


# -- S3 test server (moto), shared by the storage contract tests and anything else
# that needs MinIO's role. Set VIDEOJOBS_TEST_S3_ENDPOINT=host:port to use a server
# that is already running (e.g. one started by `make up` or .ci/run).
@pytest.fixture(scope="session")
def s3_endpoint():
    """host:port of an S3-compatible server for the whole test session."""
    import os as _os
    import subprocess as _subprocess
    import sys as _sys
    import tempfile as _tempfile
    import threading as _threading
    from pathlib import Path as _Path

    preset = _os.environ.get("VIDEOJOBS_TEST_S3_ENDPOINT")
    if preset:
        yield preset
        return
    script = _Path(__file__).resolve().parents[1] / "scripts" / "s3_server.py"
    with _tempfile.TemporaryFile("w+") as errors:
        proc = _subprocess.Popen(
            [_sys.executable, str(script), "--port", "0"],
            stdout=_subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            first_line: list[str] = []
            reader = _threading.Thread(
                target=lambda: first_line.append(proc.stdout.readline()), daemon=True
            )
            reader.start()
            reader.join(timeout=30)
            endpoint = first_line[0].strip() if first_line else ""
            if not endpoint:
                errors.seek(0)
                pytest.fail(f"S3 test server did not start:\n{errors.read()[-2000:]}")
            yield endpoint
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except _subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
