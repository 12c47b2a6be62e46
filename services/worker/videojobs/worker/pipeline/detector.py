"""The object detector: a YOLO model run at the frame's shape, on a measured CPU runtime.

An Ultralytics checkpoint (``.pt``) runs at the input shape Ultralytics' own
``predict`` letterboxes each video to (``LetterBox(auto=True)`` at ``imgsz``:
384x640 for a 16:9 frame at 640). For each such shape the checkpoint is exported
once into the model cache (see ``runtimes.cached``), keyed by the model's sha256,
the shape and the format, and run on the backend that ``detector_backend`` names:
``openvino``, ``onnxruntime``, ``torch``, or ``auto``: a short measured warm-up
of every runtime available for the model at that shape (a few forwards each),
the fastest wins. The choice and the measured times are stored beside the exports
(per model, shape and thread count) and reported in the results' provenance, so
every job that shares the cache runs on, and reports, the same choice: results
stay byte-identical for the same input, options, model and backend.

Fixed-shape models (an ``.onnx`` file or an OpenVINO folder) run at their own
input size (640x640 for the shared ONNX files), letterboxed as Ultralytics does
for them (``auto=False``).

Pre- and post-processing are Ultralytics' own pieces (``LetterBox``,
``non_max_suppression``, ``scale_boxes``), called directly on numpy batches:
the detections are what ``YOLO(model).predict`` gives, without its per-call set-up.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import itertools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import cv2
import numpy as np

from videojobs.common.errors import TemporaryFault, UnknownClass
from videojobs.common.observability.logs import adopt
from videojobs.worker.pipeline import runtimes
from videojobs.worker.pipeline.errors import DetectorUnavailable

log = logging.getLogger(__name__)

BACKENDS = ("auto", *runtimes.RUNTIMES)
PRECISIONS = ("auto", "f32")  # auto: the runtime's CPU default (OpenVINO: bf16 with AMX or AVX-512 BF16)
AUTO_RULE = "fastest median time per frame at the input shape (a batch of one frame per thread; 2 warm-up + 5 timed)"
NMS_IOU = 0.7  # Ultralytics' predict defaults
MAX_DET = 300
_SHAPES_KEPT = 4  # compiled runtimes kept per detector (one per input shape): memory stays bounded
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


@functools.lru_cache(maxsize=256)
def letterbox_shape(frame_hw: tuple[int, int], imgsz: int, stride: int) -> tuple[int, int]:
    """The input shape Ultralytics' ``predict`` gives a frame of `frame_hw` for a PyTorch model.

    Computed by Ultralytics' own ``check_imgsz`` and ``LetterBox(auto=True)`` (minimum
    rectangle: the long side at `imgsz`, the short side padded to a multiple of the stride),
    once per (frame size, imgsz, stride): it letterboxes a blank frame of that size.
    """
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.checks import check_imgsz

    size = check_imgsz(imgsz, stride=stride, min_dim=2)
    h, w = int(frame_hw[0]), int(frame_hw[1])
    out = LetterBox(size, auto=True, stride=stride)(image=np.zeros((h, w, 3), np.uint8))
    return int(out.shape[0]), int(out.shape[1])


@dataclass(frozen=True)
class ModelRef:
    """The model file as configured, for provenance: name, sha256, kind (pt, onnx, openvino)."""

    file: str
    sha256: str
    kind: str
    load_path: str


@dataclass
class _Session:
    """A runtime compiled for one input shape, and how its backend was chosen."""

    runtime: Any
    shape: tuple[int, int]
    choice: Optional[dict] = field(default=None)

    def model_info(self, ref: ModelRef) -> dict:
        info = {
            "file": ref.file,
            "sha256": ref.sha256,
            "backend": self.runtime.name,
            "input_size": max(self.shape),
            "input_shape": list(self.shape),
            "precision": self.runtime.precision,
            "threads": self.runtime.threads,
        }
        if self.choice is not None:
            info["backend_choice"] = self.choice
        return info


class Detector:
    """A lazily loaded YOLO model, reused for every job of its owner.

    ``detect`` returns, per frame, an ``(n, 6)`` float array of
    ``x1, y1, x2, y2, confidence, class_id`` in original-frame pixels, sorted by
    confidence (descending) then position, so the order is reproducible.
    """

    def __init__(self, model: str, cache_dir: Path, backend: str = "auto", threads: int = 1,
                 precision: str = "auto", cache_bytes: int = 0) -> None:
        if backend not in BACKENDS:
            raise DetectorUnavailable(f"detector_backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise DetectorUnavailable(f"detector_precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.model_spec = model
        self.cache_dir = Path(cache_dir)
        self.cache_bytes = max(0, int(cache_bytes))  # the exports' budget in the cache (0: none)
        self.backend = backend
        self.threads = max(1, int(threads))
        self._ref: Optional[ModelRef] = None
        self._names: dict[int, str] = {}
        self._stride = 32
        self._fixed_shape: Optional[tuple[int, int]] = None
        self._module: Any = None  # the PyTorch module of a checkpoint
        self._sessions: OrderedDict[tuple[int, int], _Session] = OrderedDict()
        self._letterboxes: dict[tuple[int, int], Any] = {}
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        return self._ref is not None

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> ModelRef:
        """Read the model (once): its class names, stride and, for fixed-shape models, the input size."""
        with self._lock:
            if self._ref is None:
                self._load()
                self._tidy_cache()
            assert self._ref is not None
            return self._ref

    def _load(self) -> None:
        adopt(logging.getLogger("ultralytics"))  # it installs a stdout handler of its own at import
        path = Path(self.model_spec).expanduser()
        suffix = path.suffix.lower()
        try:
            if path.is_dir():
                self._load_openvino_folder(path)
                kind = "openvino"
            elif suffix == ".onnx" and path.is_file():
                meta = _onnx_metadata(path)
                self._apply_metadata(meta, path)
                kind = "onnx"
            elif suffix == ".pt" or not path.exists():
                path = self._load_checkpoint(path)
                kind = "pt"
            else:
                raise DetectorUnavailable(f"{path.name}: unsupported model format (use .pt, .onnx or an OpenVINO folder)")
        except DetectorUnavailable:
            raise
        except Exception as exc:
            raise DetectorUnavailable(f"cannot load detector model {self.model_spec!r}: {exc}",
                                      f"the worker cannot load its detector model {path.name}") from exc
        self._ref = ModelRef(file=Path(self.model_spec).name, sha256=sha256_of(path), kind=kind, load_path=str(path))

    def _tidy_cache(self) -> None:
        """Remove what exports killed midway left in the model cache (``runtimes.remove_abandoned``)."""
        try:
            removed = runtimes.remove_abandoned(self.cache_dir)
        except OSError as exc:  # a read-only cache, say: nothing of it is ours to remove
            log.warning("model cache %s: cannot remove what killed exports left: %s", self.cache_dir, exc)
            return
        if removed:
            log.info("model cache %s: removed what killed exports left: %s", self.cache_dir, ", ".join(removed))

    def _load_checkpoint(self, path: Path) -> Path:
        from ultralytics import YOLO

        yolo = YOLO(str(path), task="detect")  # a bare name (production's yolov8n.pt) resolves through Ultralytics
        if getattr(yolo, "task", "detect") != "detect":
            raise DetectorUnavailable(f"{Path(self.model_spec).name!r} is a {yolo.task} model, not a detector")
        self._module = yolo.model
        self._names = {int(k): str(v) for k, v in yolo.names.items()}
        self._stride = int(max(int(self._module.stride.max()), 32))
        return Path(getattr(yolo, "ckpt_path", None) or path)

    def _load_openvino_folder(self, folder: Path) -> None:
        from ultralytics.utils import YAML

        meta_file = folder / "metadata.yaml"
        if not meta_file.is_file() or not any(folder.glob("*.xml")):
            raise DetectorUnavailable(f"{folder.name}: not an OpenVINO model folder (model .xml and metadata.yaml)")
        self._apply_metadata(YAML.load(meta_file), folder)

    def _apply_metadata(self, meta: dict, path: Path) -> None:
        if meta.get("task", "detect") != "detect" or "names" not in meta:
            raise DetectorUnavailable(f"{path.name} carries no Ultralytics detection metadata")
        self._names = {int(k): str(v) for k, v in meta["names"].items()}
        self._stride = int(meta.get("stride", 32))
        imgsz = meta.get("imgsz", [640, 640])
        self._fixed_shape = (int(imgsz[0]), int(imgsz[1]))

    @property
    def names(self) -> dict[int, str]:
        """Class id -> class name of the loaded model."""
        self.load()
        return dict(self._names)

    def class_ids(self, class_names: Sequence[str]) -> Optional[list[int]]:
        """Ids for the requested class names (None = all); unknown names are InvalidOptions."""
        if not class_names:
            return None
        by_name = {v: k for k, v in self.names.items()}
        unknown = [c for c in class_names if c not in by_name]
        if unknown:
            raise UnknownClass(unknown, [self.names[k] for k in sorted(self.names)])
        return sorted(by_name[c] for c in class_names)

    # -- shapes and runtimes -----------------------------------------------------------------------
    def input_shape(self, frame_hw: tuple[int, int], imgsz: int) -> tuple[int, int]:
        """The (h, w) the model runs at for frames of `frame_hw` at `imgsz`, as Ultralytics' predict uses."""
        self.load()
        if self._fixed_shape is not None:
            return self._fixed_shape
        return letterbox_shape((int(frame_hw[0]), int(frame_hw[1])), int(imgsz), int(self._stride))

    def prepare(self, frame_hw: tuple[int, int], imgsz: int) -> dict:
        """Export, choose and compile the runtime for this frame size (once); its provenance entry."""
        ref = self.load()
        return self._session(self.input_shape(frame_hw, imgsz)).model_info(ref)

    def _session(self, shape: tuple[int, int]) -> _Session:
        with self._lock:
            session = self._sessions.get(shape)
            if session is None:
                session = self._open(shape)
                self._sessions[shape] = session
                while len(self._sessions) > _SHAPES_KEPT:
                    self._sessions.popitem(last=False)
            else:
                self._sessions.move_to_end(shape)
            return session

    def available_backends(self) -> list[str]:
        """Runtimes that can run the configured model here, in preference order for ties."""
        kind = self.load().kind
        candidates = {"pt": ["openvino", "onnxruntime", "torch"], "onnx": ["openvino", "onnxruntime"],
                      "openvino": ["openvino"]}[kind]
        out = [name for name in candidates if runtimes.runtime_available(name)]
        if kind == "pt" and "onnxruntime" in out and not runtimes.onnx_exportable():
            out.remove("onnxruntime")  # exporting to ONNX needs the `onnx` package
        return out

    def _open(self, shape: tuple[int, int]) -> _Session:
        available = self.available_backends()
        if self.backend != "auto":
            if self.backend not in available:
                raise DetectorUnavailable(
                    f"detector_backend {self.backend!r} cannot run {self._ref.file if self._ref else self.model_spec}"
                    f" here (available: {', '.join(available) or 'none'})")
            return _Session(self._build(self.backend, shape), shape)
        if not available:
            raise DetectorUnavailable("no inference runtime is installed (openvino, onnxruntime or torch)")
        ref = self.load()
        record_name = (f"{Path(ref.load_path).stem}-{ref.sha256[:16]}-{shape[0]}x{shape[1]}-t{self.threads}"
                       f"{'' if self.precision == 'auto' else '-' + self.precision}-auto.json")
        record_file = self.cache_dir / record_name
        if record_file.is_file():
            choice = _read_json(record_file)
            if choice and choice.get("backend") in available:
                return _Session(self._build(choice["backend"], shape), shape, _choice_entry(choice))
        choice, runtime = self._measure(available, shape)
        stored = runtimes.write_json_once(self.cache_dir, record_name, choice)
        if stored["backend"] != choice["backend"]:  # another worker measured first: follow its record
            runtime = self._build(stored["backend"], shape)
        return _Session(runtime, shape, _choice_entry(stored))

    def _measure(self, available: list[str], shape: tuple[int, int]) -> tuple[dict, Any]:
        rng = np.random.default_rng(0)
        batch = (rng.integers(0, 256, (self.threads, 3, *shape), dtype=np.uint8) / np.float32(255)).astype(np.float32)
        times: dict[str, float] = {}
        best: Any = None
        for name in available:
            try:
                runtime = self._build(name, shape)
            except DetectorUnavailable as exc:
                log.warning("auto backend: %s unavailable: %s", name, exc)
                continue
            times[name] = runtimes.median_forward_ms(runtime, batch)
            if best is None or times[name] < times[best.name]:
                best = runtime
        if best is None:
            raise DetectorUnavailable("no inference runtime could load the model")
        log.info("auto backend at %dx%d with %d threads: %s (forward ms %s)", shape[0], shape[1], self.threads,
                 best.name, times)
        return {"backend": best.name, "rule": AUTO_RULE, "forward_ms": times}, best

    def _build(self, name: str, shape: tuple[int, int]) -> Any:
        ref = self.load()
        source = Path(ref.load_path)
        try:
            if name == "torch":
                return runtimes.TorchRuntime(self._module, self.threads)
            if ref.kind == "pt":
                stem = f"{source.stem}-{ref.sha256[:16]}-{shape[0]}x{shape[1]}"
                fmt = "openvino" if name == "openvino" else "onnx"
                entry = f"{stem}_openvino_model" if fmt == "openvino" else f"{stem}.onnx"
                model_file = runtimes.cached(
                    self.cache_dir, entry, lambda tmp: runtimes.export_checkpoint(source, fmt, shape, tmp),
                    budget_bytes=self.cache_bytes)
            else:
                model_file = source
            if model_file.is_dir():
                model_file = next(model_file.glob("*.xml"))
            if name == "openvino":
                return runtimes.OpenVinoRuntime(model_file, self.threads, self.precision)
            return runtimes.OnnxRuntime(model_file, self.threads)
        except (DetectorUnavailable, TemporaryFault):  # a full model cache is retried, not a broken runtime
            raise
        except Exception as exc:
            raise DetectorUnavailable(f"cannot prepare {ref.file} on {name} at {shape[0]}x{shape[1]}: {exc}",
                                      f"the worker cannot run {ref.file} on {name} at {shape[0]}x{shape[1]}") from exc

    # -- inference -------------------------------------------------------------------------------
    def preprocess(self, frames: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """BGR frames -> the letterboxed RGB float32 ``(n, 3, h, w)`` batch Ultralytics' predict builds."""
        out = np.empty((len(frames), 3, *shape), np.float32)
        for i, frame in enumerate(frames):
            self.letterboxed(frame, shape, out[i:i + 1])
        return out

    def letterboxed(self, frame: np.ndarray, shape: tuple[int, int], out: Optional[np.ndarray] = None) -> np.ndarray:
        """One BGR frame -> its ``(1, 3, h, w)`` tensor of the batch above, written into `out` when given."""
        letterbox = self._letterboxes.get(shape)
        if letterbox is None:
            from ultralytics.data.augment import LetterBox

            letterbox = self._letterboxes[shape] = LetterBox(shape, auto=False, stride=self._stride)
        boxed = letterbox(image=frame)  # (h, w, 3) uint8
        if out is None:
            out = np.empty((1, 3, *shape), np.float32)
        for channel, plane in enumerate(reversed(cv2.split(boxed))):  # RGB planes, as float32 x / 255
            np.divide(plane, np.float32(255), out=out[0, channel], casting="unsafe")
        return out

    def detect(
        self, frames: Sequence[np.ndarray], conf: float, imgsz: int, classes: Optional[list[int]] = None
    ) -> list[np.ndarray]:
        """Run the model on BGR frames (all of one size); one detections array per frame."""
        return self.submit(frames, conf, imgsz, classes).result()

    def submit(
        self, frames: Iterable[np.ndarray], conf: float, imgsz: int, classes: Optional[list[int]] = None
    ) -> "PendingDetections":
        """Hand BGR frames (all of one size) to the runtime; their detections come from ``result()``.

        Each frame goes in as soon as it comes and is letterboxed; a runtime that works in the
        background (OpenVINO) returns once the last is queued, so the caller can read the next
        frames or finish the last batch while the model works on these.
        """
        self.load()
        frames = iter(frames)
        head = next(frames, None)
        if head is None:
            return PendingDetections(runtimes.InFlight(np.zeros((0,))), (0, 0), [], conf, classes)
        shape = self.input_shape(head.shape[:2], imgsz)
        frame_shapes: list = []

        def prepare(frame: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
            frame_shapes.append(frame.shape)
            return self.letterboxed(frame, shape, out)

        inflight = self._session(shape).runtime.submit(itertools.chain([head], frames), prepare)
        return PendingDetections(inflight, shape, frame_shapes, conf, classes)

    def model_info(self, frame_hw: tuple[int, int], imgsz: int) -> dict:
        """Provenance of the model as it ran on frames of `frame_hw` (prepares it if needed)."""
        return self.prepare(frame_hw, imgsz)

    def forward_seconds(self, frame: np.ndarray, imgsz: int = 640, repeat: int = 20, frames: int = 1) -> float:
        """Bare model forward time per frame (letterboxed tensors in, raw output out) over a batch of
        `frames` copies of `frame`, median of `repeat`."""
        shape = self.input_shape(frame.shape[:2], imgsz)
        session = self._session(shape)
        batch = self.preprocess([frame] * frames, shape)
        return runtimes.median_forward_ms(session.runtime, batch, warmup=3, repeat=repeat) / 1000


class PendingDetections:
    """Frames handed to the detector; ``result()`` gives one ``(n, 6)`` detections array per frame.

    Detections are ``x1, y1, x2, y2, confidence, class_id`` in original-frame pixels, sorted by
    confidence (descending) then position; ``discard()`` drops frames whose results nobody will read.
    """

    def __init__(self, inflight: runtimes.InFlight, shape: tuple[int, int], frame_shapes: list,
                 conf: float, classes: Optional[list[int]]) -> None:
        self._inflight = inflight
        self._shape = shape
        self._frame_shapes = frame_shapes
        self._conf = conf
        self._classes = classes

    def discard(self) -> None:
        self._inflight.discard()

    def result(self) -> list[np.ndarray]:
        if not self._frame_shapes:
            return []
        raw = self._inflight.result()
        # Post-processing (Ultralytics' NMS, box scaling) runs in torch while the runtime's own threads
        # work on the next batch: on one thread, so no second OpenMP thread spins on a core the forward
        # needs (the default two cost 5 core-ms more per analysed frame on the sample, 43.1 against
        # 38.0, and 12% of the yolo pipeline's frames/s).
        with runtimes.torch_threads(1):
            return self._detections(raw)

    def _detections(self, raw: np.ndarray) -> list[np.ndarray]:
        import torch
        from ultralytics.utils import nms, ops

        preds = nms.non_max_suppression(torch.from_numpy(raw), self._conf, NMS_IOU, self._classes, False,
                                        max_det=MAX_DET)
        out = []
        for pred, frame_shape in zip(preds, self._frame_shapes):
            pred[:, :4] = ops.scale_boxes(self._shape, pred[:, :4], frame_shape)
            dets = pred[:, :6].numpy().astype(np.float64)
            if len(dets):
                order = np.lexsort((dets[:, 1], dets[:, 0], dets[:, 5], -dets[:, 4]))
                dets = dets[order]
            else:
                dets = np.zeros((0, 6))
            out.append(dets)
        return out


def _choice_entry(choice: dict) -> dict:
    return {"requested": "auto", "rule": choice.get("rule", AUTO_RULE),
            "forward_ms": {k: float(v) for k, v in sorted(choice.get("forward_ms", {}).items())}}


def _read_json(path: Path) -> Optional[dict]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
