"""ONNX object detectors for machine-task evaluation (onnxruntime, no torch).

A :class:`Detector` describes one ONNX model: its input convention (size, letterbox or plain
resize, BGR/RGB, value scale, pad value, optional mean/std) and a ``decode(outputs, meta)``
function that turns the raw outputs into candidate boxes in original-image pixels.  The
common post-processing (score threshold, pre-NMS top-k, class-wise NMS, at most N
detections, :mod:`.boxes`) is shared, so a decoder only has to undo the model's box
parametrisation.

Built-ins (see ``shared/detectors/README.md``): ``yolox`` (YOLOX-Nano, 416x416 letterbox,
BGR 0..255, 1x3549x85 rows) and ``fastestdet`` (FastestDet, 352x352 plain resize, BGR 0..1,
1x85x22x22 map).  Anything else plugs in through a module that defines
``make_detector(onnx_path) -> Detector`` (see ``docs/DETECTORS.md`` and :func:`resolve`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fusioncodec.eval.boxes import (
    MAX_DETECTIONS,
    NMS_IOU,
    PRE_NMS_TOPK,
    SCORE_THRESHOLD,
    Detections,
    DetectorError,
    Meta,
    decode_fastestdet,
    decode_yolox,
    nms,
    postprocess,
    preprocess,
)
from fusioncodec.files import shared_dir

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "BUILTINS",
    "Detections",
    "Detector",
    "DetectorError",
    "Meta",
    "decode_fastestdet",
    "decode_yolox",
    "detectors_dir",
    "fastestdet",
    "nms",
    "postprocess",
    "preprocess",
    "resolve",
    "yolox",
]


# --------------------------------------------------------------------------- data types


Decoder = Callable[[Sequence[np.ndarray], Meta], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Detector:
    """One ONNX detector: input convention + output decoder + post-processing settings.

    ``decode(outputs, meta)`` receives onnxruntime's outputs (a list of arrays, batch 1) and
    returns candidate ``(boxes_xyxy, scores, class_idx)`` in original-image pixels
    (``meta.to_original`` converts from input pixels); one candidate per anchor/cell with
    its best class is the usual form.  The score threshold, pre-NMS top-k, class-wise NMS
    and the ``max_detections`` cap are applied afterwards (``nms_iou=None`` skips NMS for
    models that already include it).
    """

    name: str
    onnx_path: str | Path
    input_size: tuple[int, int]  # (width, height)
    decode: Decoder
    letterbox: bool = True  # keep aspect ratio, top-left of a pad_value canvas
    bgr: bool = True  # channel order fed to the model
    scale: float = 1.0  # input = pixel (0..255) * scale; 1/255 for 0..1
    pad_value: float = 114.0  # letterbox fill, in 0..255 units (before scale)
    mean: tuple[float, float, float] | None = None  # subtracted after scaling (model order)
    std: tuple[float, float, float] | None = None  # divided after the mean
    input_name: str | None = None  # default: the model's first input
    score_threshold: float = SCORE_THRESHOLD
    nms_iou: float | None = NMS_IOU
    max_detections: int = MAX_DETECTIONS
    pre_nms_topk: int = PRE_NMS_TOPK
    clip: bool = True  # clip boxes to the image before NMS
    threads: int = 1  # onnxruntime intra_op_num_threads (0: onnxruntime's choice)
    _session: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def settings(self) -> dict[str, Any]:
        """Post-processing settings, in the layout of the shared coco128 anchors."""
        return {
            "detector": self.name,
            "score_thr": self.score_threshold,
            "nms_iou": self.nms_iou,
            "max_det": self.max_detections,
            "multilabel": False,
            "pre_nms_topk": self.pre_nms_topk,
        }

    def session(self) -> Any:
        """The onnxruntime session (created on first use; DetectorError if it fails)."""
        if self._session is None:
            path = Path(self.onnx_path)
            if not path.is_file():
                raise DetectorError(f"{self.name}: ONNX model {path} not found")
            try:
                import onnxruntime as ort
            except ImportError:
                raise DetectorError(
                    "onnxruntime is not installed (pip install 'fusioncodec[eval]')"
                ) from None
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(0, int(self.threads))
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
                raise DetectorError(f"{self.name}: cannot load {path}: {reason}") from None
        return self._session

    def __call__(self, image: Image.Image) -> Detections:
        return self.detect(image)

    def detect(self, image: Image.Image) -> Detections:
        """Run the model on a PIL image; detections in the image's own pixels."""
        tensor, meta = preprocess(self, image)
        session = self.session()
        name = self.input_name or session.get_inputs()[0].name
        try:
            outputs = session.run(None, {name: tensor})
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
            raise DetectorError(f"{self.name}: inference failed: {reason}") from None
        boxes, scores, classes = self.decode(outputs, meta)
        return postprocess(
            boxes,
            scores,
            classes,
            score_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            max_detections=self.max_detections,
            pre_nms_topk=self.pre_nms_topk,
            clip_to=(meta.orig_width, meta.orig_height) if self.clip else None,
        )


# --------------------------------------------------------------------------- built-ins


def detectors_dir() -> Path:
    return shared_dir() / "detectors"


def yolox(onnx_path: str | Path | None = None, **kwargs: Any) -> Detector:
    """YOLOX-Nano: 416x416 letterbox (pad 114, top-left), BGR, 0..255."""
    path = onnx_path or detectors_dir() / "yolox_nano.onnx"
    return Detector("yolox", path, (416, 416), decode_yolox, **kwargs)


def fastestdet(onnx_path: str | Path | None = None, **kwargs: Any) -> Detector:
    """FastestDet: 352x352 plain resize, BGR, 0..1."""
    path = onnx_path or detectors_dir() / "fastestdet.onnx"
    options = {"letterbox": False, "scale": 1 / 255, **kwargs}
    return Detector("fastestdet", path, (352, 352), decode_fastestdet, **options)


BUILTINS: dict[str, Callable[..., Detector]] = {"yolox": yolox, "fastestdet": fastestdet}


# --------------------------------------------------------------------------- plugins


def _load_file(path: Path) -> Any:
    name = f"fusioncodec_detector_plugin_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DetectorError(f"{path}: cannot load as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise DetectorError(
            f"{path}: plugin failed to load ({type(exc).__name__}: {exc})"
        ) from None
    return module


def resolve(spec: str, *, threads: int = 1, check: bool = True) -> Detector:
    """A detector from a command-line spec.

    ``yolox`` / ``fastestdet`` (shared models), ``yolox:MODEL.onnx`` / ``fastestdet:MODEL.onnx``
    (built-in decoder, another file), ``plugin.py[:MODEL.onnx]`` (a file defining
    ``make_detector``) or ``package.module:factory[:MODEL.onnx]``.  A factory is called with
    the ONNX path given in the spec, or ``None`` when there is none.  With ``check`` the ONNX
    file must exist.
    """
    spec = spec.strip()
    if not spec:
        raise DetectorError("empty detector spec")
    head, _, rest = spec.partition(":")
    if head in BUILTINS:
        detector = BUILTINS[head](rest or None)
    else:
        onnx: str | None
        if head.endswith(".py"):
            path = Path(head)
            if not path.is_file():
                raise DetectorError(f"detector plugin {head} not found")
            module, attr, onnx = _load_file(path), "make_detector", rest or None
        elif rest:
            attr, _, onnx_part = rest.partition(":")
            onnx = onnx_part or None
            try:
                module = importlib.import_module(head)
            except ImportError as exc:
                raise DetectorError(f"cannot import detector plugin {head!r}: {exc}") from None
            except Exception as exc:
                raise DetectorError(
                    f"detector plugin {head!r} failed to load ({type(exc).__name__}: {exc})"
                ) from None
        else:
            known = ", ".join(BUILTINS)
            raise DetectorError(
                f"unknown detector {spec!r} (use {known}, NAME:MODEL.onnx, plugin.py or "
                "module:factory)"
            )
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise DetectorError(f"detector plugin {head!r} has no function {attr}()")
        try:
            detector = factory(onnx)
        except Exception as exc:
            raise DetectorError(f"{head}:{attr}() failed ({type(exc).__name__}: {exc})") from None
        if not isinstance(detector, Detector):
            raise DetectorError(
                f"{head}:{attr}() returned {type(detector).__name__}, not a Detector"
            )
    detector.threads = threads
    if check and not Path(detector.onnx_path).is_file():
        raise DetectorError(f"{detector.name}: ONNX model {detector.onnx_path} not found")
    return detector
