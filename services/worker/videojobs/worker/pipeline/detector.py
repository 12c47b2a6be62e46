"""The object detector: an Ultralytics YOLO model on the fastest CPU backend available.

``detector_backend="auto"`` converts an ONNX model once into an OpenVINO IR folder
(``<model_cache_dir>/<stem>-<sha256[:16]>_openvino_model/``: ``model.xml``,
``model.bin`` and the ``metadata.yaml`` Ultralytics reads) and loads that folder;
on this class of CPU OpenVINO runs the same fp32 network about 3x faster than
ONNX Runtime and 4x faster than PyTorch. A ``.pt`` model is exported to the same
kind of folder through Ultralytics' own exporter. If conversion is impossible the
model is loaded as given.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from videojobs.common.errors import UnknownClass
from videojobs.common.observability.logs import adopt
from videojobs.worker.pipeline.errors import DetectorUnavailable

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openvino", "onnx", "native")
_INT_KEYS = {"stride", "batch", "channels"}
_LITERAL_KEYS = {"imgsz", "names", "kpt_shape", "args", "end2end"}


def sha256_of(path: Path) -> str:
    """sha256 of a model file, or of the files of a model folder (name and bytes, sorted)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _onnx_metadata(path: Path) -> dict[str, Any]:
    """Ultralytics metadata embedded in an ONNX file, with its values typed as the exporter writes them."""
    from ultralytics.nn.backends.base import BaseBackend

    raw = BaseBackend.read_metadata(path)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith("onnx."):
            continue
        if key in _INT_KEYS:
            out[key] = int(value)
        elif key in _LITERAL_KEYS and isinstance(value, str):
            out[key] = ast.literal_eval(value)
        else:
            out[key] = value
    return out


def convert_onnx_to_openvino(onnx_path: Path, cache_dir: Path, digest: str) -> Path:
    """The cached OpenVINO folder for `onnx_path`, converting it first if missing.

    Written to a temporary folder and renamed into place, so concurrent workers
    sharing the cache never load a half-written model.
    """
    import openvino as ov
    from ultralytics.utils import YAML

    target = cache_dir / f"{onnx_path.stem}-{digest[:16]}_openvino_model"
    if (target / "model.xml").is_file() and (target / "metadata.yaml").is_file():
        return target
    metadata = _onnx_metadata(onnx_path)
    if metadata.get("task", "detect") != "detect" or "names" not in metadata:
        raise DetectorUnavailable(f"{onnx_path.name} carries no Ultralytics detection metadata")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        model = ov.convert_model(str(onnx_path))
        # fp32 weights: fp16 compression changes detections slightly and buys nothing on CPU.
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        metadata["source_sha256"] = digest
        YAML.save(tmp / "metadata.yaml", metadata)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model.xml").is_file():  # someone else won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_pt_to_openvino(pt_path: Path, cache_dir: Path, digest: str) -> Path:
    """The cached OpenVINO folder for a PyTorch checkpoint, exported by Ultralytics."""
    from ultralytics import YOLO

    target = cache_dir / f"{pt_path.stem}-{digest[:16]}_openvino_model"
    if (target / "metadata.yaml").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    try:
        local = tmp / pt_path.name
        shutil.copy2(pt_path, local)
        exported = Path(YOLO(str(local)).export(format="openvino", half=False, dynamic=False, verbose=False))
        try:
            os.replace(exported, target)
        except OSError:
            if not (target / "metadata.yaml").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(frozen=True)
class ModelRef:
    """The model actually loaded, for provenance."""

    file: str
    sha256: str
    backend: str
    load_path: str
    input_size: Optional[int]

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "backend": self.backend, "input_size": self.input_size}


def resolve_model(model: str, cache_dir: Path, backend: str = "auto") -> tuple[str, str, Optional[str]]:
    """Where to load `model` from and with which backend: ``(load_path, backend_name, sha256)``.

    A model name that is not a local file (e.g. the production default ``yolov8n.pt``)
    is handed to Ultralytics as is; its sha256 is taken once Ultralytics has it.
    """
    if backend not in BACKENDS:
        raise DetectorUnavailable(f"detector_backend {backend!r} is not one of {', '.join(BACKENDS)}")
    path = Path(model).expanduser()
    if not path.exists():
        return model, _backend_of(path), None
    digest = sha256_of(path)
    suffix = path.suffix.lower()
    if path.is_dir() or backend in ("onnx", "native"):
        return str(path), _backend_of(path), digest
    try:
        if suffix == ".onnx":
            return str(convert_onnx_to_openvino(path, cache_dir, digest)), "openvino", digest
        if suffix == ".pt":
            return str(export_pt_to_openvino(path, cache_dir, digest)), "openvino", digest
    except Exception as exc:
        if backend == "openvino":
            raise DetectorUnavailable(f"cannot convert {path.name} to OpenVINO: {exc}") from exc
        log.warning("using %s as given: conversion to OpenVINO failed: %s", path.name, exc)
    return str(path), _backend_of(path), digest


def _backend_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith("_openvino_model") or path.suffix.lower() == ".xml":
        return "openvino"
    if path.suffix.lower() == ".onnx":
        return "onnxruntime"
    if path.suffix.lower() == ".pt":
        return "pytorch"
    return path.suffix.lstrip(".") or "unknown"


class Detector:
    """A lazily loaded YOLO model, reused for every job of its owner.

    ``detect`` returns, per frame, an ``(n, 6)`` float array of
    ``x1, y1, x2, y2, confidence, class_id`` in original-frame pixels, sorted by
    confidence (descending) then position, so the order is reproducible.
    """

    def __init__(self, model: str, cache_dir: Path, backend: str = "auto", threads: int = 0) -> None:
        self.threads = max(0, int(threads))
        self._threads_applied = self.threads == 0
        self.model_spec = model
        self.cache_dir = Path(cache_dir)
        self.backend = backend
        self._yolo: Any = None
        self._ref: Optional[ModelRef] = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._yolo is not None

    def load(self) -> ModelRef:
        """Load (once) and return what was loaded."""
        with self._lock:
            if self._yolo is None:
                self._load()
            assert self._ref is not None
            return self._ref

    def _load(self) -> None:
        from ultralytics import YOLO

        adopt(logging.getLogger("ultralytics"))  # it installs a stdout handler of its own at import

        load_path, backend_name, digest = resolve_model(self.model_spec, self.cache_dir, self.backend)
        try:
            yolo = YOLO(load_path, task="detect")
        except Exception as exc:
            raise DetectorUnavailable(f"cannot load detector model {self.model_spec!r}: {exc}") from exc
        if digest is None:
            resolved = Path(getattr(yolo, "ckpt_path", None) or load_path)
            digest = sha256_of(resolved) if resolved.exists() else ""
        if getattr(yolo, "task", "detect") != "detect":
            raise DetectorUnavailable(f"{self.model_spec!r} is a {yolo.task} model, not a detector")
        self._yolo = yolo
        self._ref = ModelRef(
            file=Path(self.model_spec).name,
            sha256=digest,
            backend=backend_name,
            load_path=load_path,
            input_size=None,
        )

    @property
    def names(self) -> dict[int, str]:
        """Class id -> class name of the loaded model."""
        self.load()
        return {int(k): str(v) for k, v in self._yolo.names.items()}

    def class_ids(self, class_names: Sequence[str]) -> Optional[list[int]]:
        """Ids for the requested class names (None = all); unknown names are InvalidOptions."""
        if not class_names:
            return None
        by_name = {v: k for k, v in self.names.items()}
        unknown = [c for c in class_names if c not in by_name]
        if unknown:
            raise UnknownClass(unknown, [self.names[k] for k in sorted(self.names)])
        return sorted(by_name[c] for c in class_names)

    def detect(
        self, frames: Sequence[np.ndarray], conf: float, imgsz: int, classes: Optional[list[int]] = None
    ) -> list[np.ndarray]:
        """Run the model on BGR frames; one detections array per frame."""
        self.load()
        results = self._yolo.predict(
            list(frames), conf=conf, imgsz=imgsz, classes=classes, verbose=False, save=False, batch=len(frames)
        )
        if not self._threads_applied:
            self._apply_threads()
        out = []
        for r in results:
            data = r.boxes.data.cpu().numpy().astype(np.float64, copy=False)
            dets = data[:, :6] if len(data) else np.zeros((0, 6))
            if len(dets):
                order = np.lexsort((dets[:, 1], dets[:, 0], dets[:, 5], -dets[:, 4]))
                dets = dets[order]
            out.append(dets)
        return out

    def _apply_threads(self) -> None:
        """Bound the threads inference uses (several worker processes on one machine must not
        oversubscribe its cores): torch and OpenCV globally, and the OpenVINO model recompiled with
        INFERENCE_NUM_THREADS once Ultralytics built it (its compile step is not configurable)."""
        import functools

        import cv2
        import torch

        self._threads_applied = True
        torch.set_num_threads(self.threads)
        cv2.setNumThreads(self.threads)
        backend = getattr(getattr(self._yolo, "predictor", None), "model", None)
        backend = getattr(backend, "backend", backend)
        compile_model = getattr(backend, "compile_model", None)
        if not isinstance(compile_model, functools.partial) or self._ref is None:
            return
        xml = Path(self._ref.load_path)
        xml = xml / "model.xml" if xml.is_dir() else xml
        core = getattr(compile_model.func, "__self__", None)
        if core is None or not xml.is_file():
            return
        keywords = dict(compile_model.keywords)
        keywords["config"] = {**keywords.get("config", {}), "INFERENCE_NUM_THREADS": self.threads}
        backend.compile_model = functools.partial(compile_model.func, **keywords)
        backend.ov_compiled_model = backend.compile_model(core.read_model(str(xml)))
        log.info("detector limited to %d inference thread(s)", self.threads)

    def input_size(self) -> Optional[int]:
        """The size the model runs at when its input shape is fixed (an export's imgsz), else None."""
        self.load()
        predictor = getattr(self._yolo, "predictor", None)
        backend = getattr(predictor, "model", None)
        if backend is not None and not getattr(backend, "dynamic", False):
            imgsz = getattr(backend, "imgsz", None)
            if isinstance(imgsz, (list, tuple)) and imgsz:
                return int(max(imgsz))
        return None

    def forward_seconds(self, frame: np.ndarray, repeat: int = 20) -> float:
        """Bare model forward time for one frame (letterboxed tensor in, raw output out), median of `repeat`."""
        import time

        import torch

        self.load()
        self.detect([frame], conf=0.25, imgsz=640)
        predictor = self._yolo.predictor
        im = predictor.preprocess([frame])
        times = []
        with torch.inference_mode():
            for _ in range(repeat):
                t0 = time.perf_counter()
                predictor.model(im)
                times.append(time.perf_counter() - t0)
        times.sort()
        return times[len(times) // 2]
