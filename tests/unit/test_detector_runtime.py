"""The detector's pieces that need no model: thread sizing, the export cache, backend names."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

from videojobs.common.config import Settings
from videojobs.common.cpus import default_inference_threads, usable_cpus
from videojobs.worker.pipeline import runtimes
from videojobs.worker.pipeline.detector import Detector
from videojobs.worker.pipeline.errors import DetectorUnavailable

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "limit", "usable"),
    [
        ({0, 1, 2, 3}, "max 100000\n", 0, 4),  # no quota: the affinity
        ({0, 1, 2, 3}, "200000 100000\n", 0, 2),  # a 2-core quota
        ({0, 1, 2, 3}, "150000 100000\n", 0, 1),  # 1.5 cores cannot keep two threads busy
        ({0, 1, 2, 3}, "50000 100000\n", 0, 1),  # never below 1
        ({0, 1}, "800000 100000\n", 0, 2),  # the affinity bounds a larger quota
        (set(range(16)), "", 3, 3),  # no cgroup file; the orchestrator's limit
        (set(range(16)), "garbage", 0, 16),
    ],
)
def test_usable_cores_from_affinity_quota_and_limit(affinity, cpu_max, limit, usable):
    assert usable_cpus(affinity, cpu_max, limit) == usable


def test_inference_threads_default_to_the_usable_cores():
    assert [default_inference_threads(n) for n in (0, 1, 2, 3, 8)] == [1, 1, 2, 3, 8]
    assert Settings(inference_threads=5).effective_inference_threads == 5  # explicit wins
    assert Settings(cpu_limit=1).effective_inference_threads == 1
    assert Settings().effective_inference_threads == default_inference_threads(usable_cpus())


def test_backend_names_are_checked():
    assert Settings(detector_backend="torch").detector_backend == "torch"
    with pytest.raises(pydantic.ValidationError):
        Settings(detector_backend="onnx")  # the old name: a clear error at start, not a silent default
    with pytest.raises(DetectorUnavailable, match="auto, openvino, onnxruntime, torch"):
        Detector("m.pt", Path("cache"), "tensorrt")


_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from videojobs.worker.pipeline.runtimes import cached

    cache, log = Path(sys.argv[1]), Path(sys.argv[2])

    def produce(tmp):
        with log.open("a") as f:
            f.write(f"{os.getpid()}\\n")
        out = tmp / "model"
        out.mkdir()
        (out / "model.xml").write_text("<xml/>")
        time.sleep(0.5)  # a slow export: the other process must wait, then reuse
        (out / "model.bin").write_bytes(b"w" * 1000)
        return out

    target = cached(cache, "m-abc-384x640_openvino_model", produce)
    print(sorted(p.name for p in target.iterdir()))
""")


def test_two_processes_exporting_the_same_entry_produce_it_once(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "exports.log"
    env = {"PYTHONPATH": ":".join(str(REPO / p) for p in ("libs/common", "services/worker", "."))}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(cache), str(log)], stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["['model.bin', 'model.xml']"] * 2  # both see the complete entry
    assert len(log.read_text().split()) == 1  # exported once
    entries = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert entries == ["m-abc-384x640_openvino_model"]  # no temporary folder left behind
    assert (cache / entries[0] / "model.bin").stat().st_size == 1000


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    def produce(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        runtimes.cached(tmp_path, "entry", produce)
    assert [p.name for p in tmp_path.iterdir()] == [".entry.lock"]
    # The next attempt produces it.
    assert runtimes.cached(tmp_path, "entry", lambda tmp: _write(tmp / "ok", "1")).read_text() == "1"


def test_the_first_record_wins(tmp_path):
    first = runtimes.write_json_once(tmp_path, "choice.json", {"backend": "openvino"})
    second = runtimes.write_json_once(tmp_path, "choice.json", {"backend": "torch"})
    assert first == second == {"backend": "openvino"}


def _export(size: int):
    """A producer of an OpenVINO-like export folder of `size` bytes."""
    def produce(tmp: Path) -> Path:
        folder = tmp / "model_openvino_model"
        folder.mkdir()
        (folder / "model.bin").write_bytes(b"\0" * size)
        return folder
    return produce


def _age(path: Path, seconds: float) -> None:
    import os
    import time

    os.utime(path, (time.time() - seconds, time.time() - seconds))


def test_past_its_budget_the_cache_drops_the_least_recently_used_exports_never_records(tmp_path):
    budget = 3 * 1000
    for k in range(3):
        runtimes.cached(tmp_path, f"m-{k}_openvino_model", _export(1000), budget_bytes=budget)
        _age(tmp_path / f"m-{k}_openvino_model", 3600 - k * 60)  # m-0 used longest ago
    runtimes.write_json_once(tmp_path, "m-auto.json", {"backend": "openvino"})
    _age(tmp_path / "m-auto.json", 7200)
    runtimes.cached(tmp_path, "m-0_openvino_model", _export(1000), budget_bytes=budget)  # used again: now newest
    runtimes.cached(tmp_path, "m-3_openvino_model", _export(1000), budget_bytes=budget)  # one over the budget
    kept = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert kept == ["m-0_openvino_model", "m-2_openvino_model", "m-3_openvino_model", "m-auto.json"]
    runtimes.cached(tmp_path, "m-1_openvino_model", _export(1000), budget_bytes=budget)  # gone: exported again
    assert (tmp_path / "m-1_openvino_model" / "model.bin").stat().st_size == 1000


def test_exports_used_recently_stay_past_the_budget(tmp_path):
    for k in range(3):
        runtimes.cached(tmp_path, f"m-{k}_openvino_model", _export(1000), budget_bytes=1000)
    # each new one was over the budget, but the others had just been used (a process may be loading them)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "m-0_openvino_model", "m-1_openvino_model", "m-2_openvino_model"]
    assert runtimes.evict_exports(tmp_path, 1000, now=__import__("time").time() + 3600) == [
        "m-0_openvino_model", "m-1_openvino_model"]
    assert not any(".evicted-" in p.name for p in tmp_path.iterdir())


def test_an_export_refused_for_space_is_made_again_after_the_old_exports_go(tmp_path):
    import errno

    runtimes.cached(tmp_path, "old_openvino_model", _export(1000))
    _age(tmp_path / "old_openvino_model", 3600)
    runtimes.cached(tmp_path, "new_openvino_model", _export(10))
    calls = []

    def export(tmp: Path) -> Path:  # the disk has room only once the old export is gone
        calls.append(tmp)
        if (tmp_path / "old_openvino_model").exists():
            raise RuntimeError("export failed") from OSError(errno.ENOSPC, "No space left on device")
        return _export(1000)(tmp)

    made = runtimes.cached(tmp_path, "next_openvino_model", export)
    assert len(calls) == 2 and (made / "model.bin").stat().st_size == 1000
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "new_openvino_model", "next_openvino_model"]


def test_what_a_killed_export_or_eviction_left_goes_when_the_entry_is_produced_again(tmp_path):
    name = "m_openvino_model"
    for left in (f".{name}.k2x_9q0a", f".{name}.evicted-4242"):  # mkdtemp's folder; an entry renamed away
        (tmp_path / left).mkdir()
        (tmp_path / left / "model.bin").write_bytes(b"\0" * 1000)
    (tmp_path / f".{name}.json.lock").touch()  # another entry's lock: not a leftover of this one
    (tmp_path / f".{name}.json.k2x_9q0a").mkdir()  # another entry's temporary folder (its process may be alive)
    runtimes.cached(tmp_path, name, _export(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".{name}.json.k2x_9q0a", f".{name}.json.lock", f".{name}.lock", name]


def test_what_killed_exports_left_goes_unless_its_entry_is_being_worked_on(tmp_path):
    left = {"a_openvino_model": ".a_openvino_model.k2x_9q0a", "b.onnx": ".b.onnx.evicted-4242",
            "c_openvino_model": ".c_openvino_model.q1w2e3r4"}
    for path in left.values():
        (tmp_path / path).mkdir()
        (tmp_path / path / "model.bin").write_bytes(b"\0" * 1000)
    runtimes.cached(tmp_path, "d_openvino_model", _export(10))
    runtimes.write_json_once(tmp_path, "d-auto.json", {"backend": "openvino"})
    before = {p.name for p in tmp_path.iterdir()} - set(left.values())
    # another process is exporting c right now: its folder is work in progress
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                               "print('held', flush=True); sys.stdin.read()", str(tmp_path / ".c_openvino_model.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert runtimes.remove_abandoned(tmp_path) == [left["a_openvino_model"], left["b.onnx"]]
        assert (tmp_path / left["c_openvino_model"] / "model.bin").exists()
    finally:
        holder.communicate("", timeout=30)
    assert runtimes.remove_abandoned(tmp_path) == [left["c_openvino_model"]]  # its holder is gone
    after = {p.name for p in tmp_path.iterdir()}
    assert after - before == {".a_openvino_model.lock", ".b.onnx.lock", ".c_openvino_model.lock"}
    assert before <= after  # entries, records and locks stay
    assert runtimes.remove_abandoned(tmp_path / "missing") == []


def test_a_full_disk_first_takes_back_what_killed_exports_left(tmp_path):
    import errno

    runtimes.cached(tmp_path, "old_openvino_model", _export(1000))  # used just now: eviction keeps it
    (tmp_path / ".gone_openvino_model.k2x_9q0a").mkdir()
    calls = []

    def export(tmp: Path) -> Path:  # room only once the leftover is gone
        calls.append(tmp)
        if (tmp_path / ".gone_openvino_model.k2x_9q0a").exists():
            raise RuntimeError("export failed") from OSError(errno.ENOSPC, "No space left on device")
        return _export(1000)(tmp)

    made = runtimes.cached(tmp_path, "next_openvino_model", export)
    assert len(calls) == 2 and (made / "model.bin").exists() and (tmp_path / "old_openvino_model").exists()


def test_an_export_failing_for_another_reason_evicts_nothing(tmp_path):
    runtimes.cached(tmp_path, "old_openvino_model", _export(1000))
    _age(tmp_path / "old_openvino_model", 3600)

    def export(tmp: Path) -> Path:
        raise PermissionError("read-only")

    with pytest.raises(PermissionError):
        runtimes.cached(tmp_path, "next_openvino_model", export)
    assert (tmp_path / "old_openvino_model").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_model_errors_tell_clients_no_paths(tmp_path):
    weights = tmp_path / "private" / "model.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"not a model")
    with pytest.raises(DetectorUnavailable) as err:
        Detector(str(weights), tmp_path / "cache").load()
    assert "model.bin" in err.value.public_detail and str(tmp_path) not in err.value.public_detail
    wrapped = DetectorUnavailable(f"cannot load {weights}: libfoo said no", "the worker cannot load model.bin")
    assert wrapped.public_detail == "the worker cannot load model.bin" and str(weights) in str(wrapped)


def test_the_worker_gives_its_detector_the_model_cache_budget(tmp_path):
    from videojobs.worker.bootstrap import build_analyzer

    analyzer = build_analyzer(Settings(model_cache_dir=tmp_path, model_cache_bytes=768 * 2 ** 20))
    assert analyzer.detector.cache_bytes == 768 * 2 ** 20
