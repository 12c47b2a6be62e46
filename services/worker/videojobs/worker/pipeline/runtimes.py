"""Inference runtimes for the detector, and the cache of models exported per input shape.

A runtime takes a letterboxed ``(n, 3, h, w)`` float32 batch and returns the raw
``(n, 4 + classes, anchors)`` output of the YOLO head. Three are available:
OpenVINO (``openvino``), ONNX Runtime (``onnxruntime``) and the PyTorch module
itself (``torch``). Each runs with the thread count it is given.

Exports from an Ultralytics checkpoint are written by Ultralytics' own exporter,
once per (model sha256, input shape, format), into the model cache folder: under
an exclusive ``fcntl`` lock per entry, into a temporary folder beside it, then
renamed into place, so concurrent worker processes sharing the cache never see a
half-written model and never export the same entry twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from videojobs.common.errors import is_out_of_space, out_of_space_is_temporary

RUNTIMES = ("openvino", "onnxruntime", "torch")


# -- the cache -------------------------------------------------------------------------------
def cached(cache_dir: Path, name: str, produce: Callable[[Path], Path], budget_bytes: int = 0) -> Path:
    """``cache_dir/name``, produced once by ``produce(tmp_dir) -> path inside tmp_dir`` if missing.

    Safe across processes: the producer runs under an exclusive lock on
    ``.name.lock`` and its result is renamed into place in one step. A full disk is ``OutOfSpace``
    (a temporary fault), with nothing left of the attempt, unless removing the exports not used
    recently made room for it: then it is produced once more. Each use marks the entry as used (its
    mtime); with `budget_bytes`, a new entry makes the least recently used exports go (``evict_exports``).
    """
    target = cache_dir / name
    if target.exists():
        _mark_used(target)
        return target
    with out_of_space_is_temporary("the model cache"):
        try:
            made = _produce_once(cache_dir, name, target, produce)
        except Exception as exc:
            # The cache's own old exports may be what fills its disk (a budget set too high, or none):
            # they can be exported again when needed, the job at hand cannot wait for space.
            # So may what killed exports left.
            if not is_out_of_space(exc) or not (remove_abandoned(cache_dir)
                                                or evict_exports(cache_dir, 0, keep=target)):
                raise
            made = _produce_once(cache_dir, name, target, produce)
        if budget_bytes:
            evict_exports(cache_dir, budget_bytes, keep=made)
        return made


# Exports (not auto's records: jobs sharing a cache follow those, so they are never removed).
EXPORT_SUFFIXES = ("_openvino_model", ".onnx")
# An export used this recently stays whatever the budget: a process may be about to load it.
RECENTLY_USED_SECONDS = 300.0


def evict_exports(cache_dir: Path, budget_bytes: int, keep: Optional[Path] = None,
                  now: Optional[float] = None) -> list[str]:
    """Remove the least recently used exports until the cache's exports fit `budget_bytes` (names of
    those removed). `keep` and exports used in the last ``RECENTLY_USED_SECONDS`` stay, so the bound is
    soft by that much. Each goes under its entry's lock, renamed away in one step before it is deleted:
    no process sees half of one, and one exporting it again waits for the lock."""
    now = time.time() if now is None else now
    entries = []
    for path in cache_dir.iterdir():
        if path.name.startswith(".") or not path.name.endswith(EXPORT_SUFFIXES):
            continue
        with contextlib.suppress(FileNotFoundError):  # another process removed it meanwhile
            entries.append((path.stat().st_mtime, _bytes_of(path), path))
    total = sum(size for _, size, _ in entries)
    removed: list[str] = []
    for used, size, path in sorted(entries, key=lambda e: (e[0], e[2].name)):
        if total <= budget_bytes:
            break
        if path == keep or now - used < RECENTLY_USED_SECONDS:
            continue
        with open(cache_dir / f".{path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if path.exists():
                    gone = path.with_name(f".{path.name}.evicted-{os.getpid()}")
                    os.replace(path, gone)
                    _remove(gone)
                    removed.append(path.name)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        total -= size
    return removed


def _mark_used(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache (baked into an image) is simply never evicted
        os.utime(path)


def _bytes_of(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _produce_once(cache_dir: Path, name: str, target: Path, produce: Callable[[Path], Path]) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if target.exists():  # another process produced it while we waited
                return target
            _remove_leftovers(cache_dir, name)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir))
            try:
                os.replace(produce(tmp), target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


# What a process killed while producing or evicting an entry leaves: its temporary folder (``mkdtemp``'s
# ``.name.XXXXXXXX``) or the entry it had renamed away (``.name.evicted-PID``).
_LEFTOVER = r"(?:[a-z0-9_]{8}|evicted-\d+)"


def _remove_leftovers(cache_dir: Path, name: str) -> None:
    """Remove what a killed process left of `name`. Called under the entry's lock, which that process
    no longer holds: nobody else is using them."""
    leftover = re.compile(re.escape(f".{name}.") + _LEFTOVER)
    for path in cache_dir.iterdir():
        if leftover.fullmatch(path.name):
            _remove(path)


def remove_abandoned(cache_dir: Path) -> list[str]:
    """Remove what killed processes left of any entry nobody is producing or evicting now (its lock is
    free), so an export that was never asked for again does not keep its disk space; names removed.
    An entry whose lock is held is left to its holder."""
    found: dict[str, list[Path]] = {}
    pattern = re.compile(r"\.(?P<name>.+)\." + _LEFTOVER)
    with contextlib.suppress(FileNotFoundError):
        for path in cache_dir.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                found.setdefault(match["name"], []).append(path)
    removed: list[str] = []
    for name, paths in sorted(found.items()):
        with open(cache_dir / f".{name}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being produced or evicted right now: these may be its work in progress
            try:
                for path in paths:
                    _remove(path)
                    removed.append(path.name)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return removed


def _remove(path: Path) -> None:
    """An export (a folder for OpenVINO, a file for ONNX) or what is left of one."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json_once(cache_dir: Path, name: str, data: dict) -> dict:
    """Store `data` as ``cache_dir/name`` unless present; return what the cache holds."""

    def produce(tmp: Path) -> Path:
        out = tmp / name
        out.write_text(json.dumps(data, sort_keys=True))
        return out

    return json.loads(cached(cache_dir, name, produce).read_text())


def export_checkpoint(pt_path: Path, fmt: str, shape: tuple[int, int], tmp: Path) -> Path:
    """Export an Ultralytics checkpoint at a fixed input shape with Ultralytics' exporter (offline)."""
    from ultralytics import YOLO

    local = tmp / pt_path.name
    shutil.copy2(pt_path, local)  # the exporter writes beside its input
    options: dict[str, Any] = {"format": fmt, "imgsz": list(shape), "half": False, "int8": False, "dynamic": False,
                               "batch": 1, "device": "cpu", "verbose": False}
    if fmt == "onnx":
        options["simplify"] = False  # onnxslim is not a dependency; nothing may be installed at run time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace deprecation notices from the exporter
        return Path(YOLO(str(local), task="detect").export(**options))


def onnx_exportable() -> bool:
    """Ultralytics' ONNX exporter needs the ``onnx`` package (not a dependency of the worker)."""
    return importlib.util.find_spec("onnx") is not None


def runtime_available(name: str) -> bool:
    module = {"openvino": "openvino", "onnxruntime": "onnxruntime", "torch": "torch"}[name]
    return importlib.util.find_spec(module) is not None


# -- runtimes --------------------------------------------------------------------------------
def as_input(tensor: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The default ``prepare`` of ``submit``: the items are ``(1, 3, h, w)`` tensors already, copied
    into the runtime's own input buffer when it offers one."""
    if out is None:
        return tensor
    np.copyto(out, tensor)
    return out


class InFlight:
    """Frames handed to a runtime: ``result()`` gives their raw outputs, in the order given."""

    def __init__(self, outputs: np.ndarray) -> None:
        self._outputs = outputs

    def result(self) -> np.ndarray:
        return self._outputs

    def discard(self) -> None:
        """Wait until none of these frames is in flight, without their outputs (an abandoned batch)."""


class _Runtime:
    """What every runtime offers: ``runtime(batch)``, ``run_frames(tensors)`` and ``submit(items, prepare)``."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def submit(self, items: Iterable[Any], prepare: Callable[..., np.ndarray] = as_input) -> InFlight:
        """Start the forward of items given one by one. ``prepare(item, out=None)`` makes an item's
        ``(1, 3, h, w)`` float32 input: written into ``out`` (a buffer the runtime owns, so no tensor is
        allocated or copied per frame) when the runtime passes one, else a new array. By default the
        inputs are computed at once, as one batch; a runtime that works in the background returns
        before they are done."""
        return InFlight(self(np.concatenate([prepare(item) for item in items])))

    def run_frames(self, tensors: Iterable[np.ndarray]) -> np.ndarray:
        """Forward ``(1, 3, h, w)`` tensors given one by one; their raw outputs, in order."""
        return self.submit(tensors).result()


class OpenVinoRuntime(_Runtime):
    """An OpenVINO model (IR ``.xml`` or ``.onnx``) compiled for the CPU.

    With ``threads`` > 1 the model runs as that many streams of one thread each, and the
    frames of a batch go through them side by side, rather than one frame at a time on
    ``threads`` threads. Streams do not wait for each other: when the decoder or OCR thread
    takes a core for a moment, one frame's forward pauses while the other goes on, where a
    multi-threaded forward stalls at its next barrier. On a 2-core AVX2 CPU, with a
    decode-like thread beside it: 2 streams 70 ms/frame, 2 threads 91 ms, 1 thread 76 ms
    (47, 49 and 81 ms without it). Each frame is still computed by one thread with the same
    kernels, so the outputs are bit-identical to the 1-thread runtime (tested).

    Every frame gets an infer request of its own (reused from call to call), so frames beyond
    the streams wait in the plugin's queue rather than in the caller: ``submit`` returns at
    once, and the caller letterboxes the next batch and post-processes the last one while the
    streams work on this one.

    The precision is the CPU plugin's default with ``precision="auto"``, as Ultralytics' own
    OpenVINO backend leaves it (bf16 on CPUs with AMX or AVX-512 BF16, f32 elsewhere), or
    ``f32`` when asked for; it is recorded in provenance.
    """

    name = "openvino"

    def __init__(self, model_file: Path, threads: int, precision: str = "auto") -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(model_file))
        self.streams = max(1, int(threads))
        # No CPU pinning: OpenVINO pins its inference threads to the first cores, so the 1-thread
        # runtimes of two worker processes on one machine would share core 0 (each 2.3x slower,
        # measured) while the other core idled; the OS scheduler spreads them instead.
        config: dict = {"NUM_STREAMS": self.streams, "INFERENCE_NUM_THREADS": self.streams,
                        "ENABLE_CPU_PINNING": False}
        if self.streams == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(model, "CPU", config)
        self.precision = _precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))  # the plugin caps it at the cores
        self._idle: list = []  # infer requests not in flight
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run_frames(batch[i:i + 1] for i in range(len(batch)))  # exported with batch 1

    def submit(self, items: Iterable[Any], prepare: Callable[..., np.ndarray] = as_input) -> InFlight:
        """Queue each item as it comes, prepared straight into its infer request's input tensor (the
        streams start on the first while the caller prepares the next), and return; if an item fails
        to come or to be prepared, the frames already queued are finished before the error goes on,
        so nothing of the call stays in flight."""
        call = _Requests(self)
        try:
            for item in items:
                call.start(item, prepare)
        except BaseException:
            call.discard()
            raise
        return call

    def _request(self) -> Any:
        with self._lock:
            return self._idle.pop() if self._idle else self.compiled.create_infer_request()

    def _release(self, requests: list) -> None:
        with self._lock:
            self._idle.extend(requests)


class _Requests(InFlight):
    """OpenVINO infer requests started for one call, each on its own input tensor."""

    def __init__(self, runtime: OpenVinoRuntime) -> None:
        self._runtime = runtime
        self._requests: list = []

    def start(self, item: Any, prepare: Callable[..., np.ndarray]) -> None:
        request = self._runtime._request()
        try:
            buffer = request.get_input_tensor(0).data  # the request's own memory: nothing copied in
            tensor = prepare(item, buffer)
            if tensor is not buffer:  # a prepare that made its own array after all
                np.copyto(buffer, tensor)
        except BaseException:
            self._runtime._release([request])
            raise
        self._requests.append(request)
        request.start_async()

    def result(self) -> np.ndarray:
        try:
            outputs = np.zeros((0,), np.float32)  # no frame, no output
            for i, request in enumerate(self._requests):
                request.wait()  # raises what the inference raised
                output = request.get_output_tensor(0).data  # (1, ...): the request's own memory
                if i == 0:
                    outputs = np.empty((len(self._requests), *output.shape[1:]), output.dtype)
                outputs[i] = output[0]  # copied out once: the request goes back to the pool
            return outputs
        finally:
            self.discard()

    def discard(self) -> None:
        requests, self._requests = self._requests, []
        try:
            for request in requests:
                try:
                    request.wait()
                except Exception:  # noqa: BLE001 - an abandoned frame's failure has nobody to reach
                    pass
        finally:
            self._runtime._release(requests)


class OnnxRuntime(_Runtime):
    """An ONNX file on ONNX Runtime's CPU provider."""

    name = "onnxruntime"
    precision = "f32"

    def __init__(self, model_file: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_batch = self.session.get_inputs()[0].shape[0] == 1
        self.threads = int(threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch:
            return np.concatenate([self.session.run(None, {self.input_name: batch[i:i + 1]})[0]
                                   for i in range(len(batch))])
        return self.session.run(None, {self.input_name: batch})[0]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch runs the block's operations on `threads` threads, then goes back to its previous count.

    The count belongs to the calling thread (torch's OpenMP keeps one per thread, and a thread that
    has run torch keeps its own when another sets it), so it is set where the work runs.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchRuntime(_Runtime):
    """The checkpoint's own PyTorch module (any input shape, no export).

    The forward runs on ``threads`` threads (``torch_threads``), whatever count the calling
    thread had: the detector's post-processing runs torch on one.
    """

    name = "torch"
    precision = "f32"

    def __init__(self, module: Any, threads: int) -> None:
        import torch

        self.module = module.eval()
        self.torch = torch
        self.threads = int(threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads), self.torch.inference_mode():
            out = self.module(self.torch.from_numpy(batch))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.numpy()


def _precision_name(value: Any) -> str:
    text = value.to_string() if hasattr(value, "to_string") else str(value).lower()
    for name in ("bf16", "f16", "f32"):
        if name in text:
            return name
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(text, text)


def median_forward_ms(runtime: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, warmup: int = 2,
                      repeat: int = 5) -> float:
    """Median wall time per frame of one forward of `batch` after `warmup` unmeasured ones (a
    batch of several frames measures what a runtime with several streams gets through)."""
    for _ in range(warmup):
        runtime(batch)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        runtime(batch)
        times.append(time.perf_counter() - t0)
    times.sort()
    return round(times[len(times) // 2] * 1000 / len(batch), 2)
