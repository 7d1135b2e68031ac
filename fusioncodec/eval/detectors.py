"""ONNX object detectors for machine-task evaluation (onnxruntime, no torch).

A :class:`Detector` describes one ONNX model: its input convention (size, letterbox or plain
resize, BGR/RGB, value scale, pad value, optional mean/std) and a ``decode(outputs, meta)``
function that turns the raw outputs into candidate boxes in original-image pixels.  The
common post-processing (score threshold, pre-NMS top-k, class-wise NMS, at most N
detections) is done here, so a decoder only has to undo the model's box parametrisation.

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

SCORE_THRESHOLD = 0.001
NMS_IOU = 0.65
MAX_DETECTIONS = 100
PRE_NMS_TOPK = 3000


class DetectorError(ValueError):
    """A detector cannot be built, loaded or run (one-line message)."""


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Meta:
    """How an original image was mapped onto the network input (for decoders).

    ``ratio_x``/``ratio_y`` are input pixels per original pixel: equal (``r``) for a
    letterbox (image at the top-left of the canvas), ``in_w/orig_w`` and ``in_h/orig_h``
    for a plain resize.
    """

    orig_width: int
    orig_height: int
    input_width: int
    input_height: int
    ratio_x: float
    ratio_y: float
    letterbox: bool

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in network-input pixels -> original-image pixels."""
        out = np.asarray(boxes, dtype=np.float64).copy()
        out[..., 0::2] /= self.ratio_x
        out[..., 1::2] /= self.ratio_y
        return out


@dataclass
class Detections:
    """Final detections of one image: xyxy boxes (original pixels), scores, class indices."""

    boxes: np.ndarray  # (n, 4) float64
    scores: np.ndarray  # (n,) float64
    classes: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.scores)


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


# --------------------------------------------------------------------------- pre-processing


def _resize_bilinear(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a uint8 HxWxC array like OpenCV's ``cv2.resize`` (INTER_LINEAR).

    Half-pixel centres, edge samples clamped, no antialiasing (Pillow's downscaling low-passes
    the image, OpenCV's does not), result rounded to uint8 levels.  The detectors were
    trained and evaluated on OpenCV-resized images; this reproduces their reference mAP.
    Returned as float32.
    """
    src_h, src_w = pixels.shape[:2]
    if (src_w, src_h) == (width, height):
        return pixels.astype(np.float32)

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(height, src_h)
    x0, x1, fx = axis(width, src_w)
    src = pixels.astype(np.float32)
    rows = src[y0] * (1 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255, out=out)


def preprocess(detector: Detector, image: Image.Image) -> tuple[np.ndarray, Meta]:
    """PIL image -> float32 1x3xHxW input tensor and the :class:`Meta` of the mapping."""
    rgb = np.asarray(image.convert("RGB"))
    orig_h, orig_w = rgb.shape[:2]
    in_w, in_h = detector.input_size
    if detector.letterbox:
        r = min(in_w / orig_w, in_h / orig_h)
        new_w, new_h = max(1, int(orig_w * r)), max(1, int(orig_h * r))
        canvas = np.full((in_h, in_w, 3), detector.pad_value, dtype=np.float32)
        canvas[:new_h, :new_w] = _resize_bilinear(rgb, new_w, new_h)
        meta = Meta(orig_w, orig_h, in_w, in_h, r, r, True)
    else:
        canvas = _resize_bilinear(rgb, in_w, in_h)
        meta = Meta(orig_w, orig_h, in_w, in_h, in_w / orig_w, in_h / orig_h, False)
    if detector.bgr:
        canvas = canvas[..., ::-1]
    x = canvas * np.float32(detector.scale)
    if detector.mean is not None:
        x = x - np.asarray(detector.mean, dtype=np.float32)
    if detector.std is not None:
        x = x / np.asarray(detector.std, dtype=np.float32)
    tensor = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
    return tensor, meta


# --------------------------------------------------------------------------- post-processing


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, best score first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Class-wise NMS (boxes of different classes never suppress each other)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    # Shift each class to its own region of the plane, then one NMS pass (torchvision's trick).
    offset = np.asarray(classes, dtype=np.float64)[:, None] * (boxes.max() - boxes.min() + 1)
    keep = nms(boxes + offset, scores, iou_threshold)
    return keep


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    nms_iou: float | None = NMS_IOU,
    max_detections: int = MAX_DETECTIONS,
    pre_nms_topk: int = PRE_NMS_TOPK,
    clip_to: tuple[int, int] | None = None,
) -> Detections:
    """Clip boxes to ``clip_to`` (w, h), threshold, keep the top ``pre_nms_topk``, class-wise
    NMS, keep ``max_detections``."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if not (len(boxes) == len(scores) == len(classes)):
        raise DetectorError(
            f"decoder returned {len(boxes)} boxes, {len(scores)} scores, {len(classes)} classes"
        )
    if clip_to is not None:
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, clip_to[0])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, clip_to[1])
    ok = (scores > score_threshold) & np.isfinite(scores) & np.isfinite(boxes).all(axis=1)
    boxes, scores, classes = boxes[ok], scores[ok], classes[ok]
    order = np.argsort(-scores, kind="stable")
    if pre_nms_topk and pre_nms_topk > 0:
        order = order[:pre_nms_topk]
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    if nms_iou is not None:
        keep = batched_nms(boxes, scores, classes, nms_iou)
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if max_detections and max_detections > 0:
        boxes, scores, classes = (
            boxes[:max_detections],
            scores[:max_detections],
            classes[:max_detections],
        )
    return Detections(boxes, scores, classes)


# --------------------------------------------------------------------------- built-in decoders


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_yolox(
    outputs: Sequence[np.ndarray], meta: Meta, strides: Sequence[int] = (8, 16, 32)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOX raw head output (1xNx(5+C), rows per anchor for each stride, x fastest).

    centre = (out[0:2] + grid) * stride, size = exp(out[2:4]) * stride (letterboxed input
    pixels); score = objectness * best class score (both already in 0..1).
    """
    pred = np.asarray(outputs[0], dtype=np.float64).reshape(-1, np.shape(outputs[0])[-1])
    grids, steps = [], []
    for stride in strides:
        gw, gh = meta.input_width // stride, meta.input_height // stride
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        steps.append(np.full((gw * gh, 1), stride, dtype=np.float64))
    grid, step = np.concatenate(grids), np.concatenate(steps)
    if len(grid) != len(pred):
        raise DetectorError(
            f"YOLOX output has {len(pred)} rows, expected {len(grid)} for a "
            f"{meta.input_width}x{meta.input_height} input"
        )
    centre = (pred[:, 0:2] + grid) * step
    size = np.exp(pred[:, 2:4]) * step
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    cls = pred[:, 5:]
    classes = cls.argmax(axis=1)
    scores = pred[:, 4] * cls[np.arange(len(cls)), classes]
    return meta.to_original(boxes), scores, classes


def decode_fastestdet(
    outputs: Sequence[np.ndarray], meta: Meta
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FastestDet map (1x(5+C)xHxW): obj, 4 box regressions, class scores per cell.

    centre = ((tanh(reg0) + gx) / W, (tanh(reg1) + gy) / H), size = sigmoid(reg2:4), as
    fractions of the image; score = obj^0.6 * best class^0.4.
    """
    out = np.asarray(outputs[0], dtype=np.float64)
    out = out.reshape(out.shape[-3:])
    channels, gh, gw = out.shape
    rows = out.reshape(channels, -1).T  # (H*W, C), row-major cells, x fastest
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    obj = rows[:, 0]
    cls = rows[:, 5:]
    classes = cls.argmax(axis=1)
    best = cls[np.arange(len(cls)), classes]
    scores = np.power(np.clip(obj, 0, None), 0.6) * np.power(np.clip(best, 0, None), 0.4)
    cx = (np.tanh(rows[:, 1]) + xs.ravel()) / gw
    cy = (np.tanh(rows[:, 2]) + ys.ravel()) / gh
    w, h = _sigmoid(rows[:, 3]), _sigmoid(rows[:, 4])
    # Fractions of the (plainly resized) image: scale straight to original pixels.
    boxes = np.stack(
        [
            (cx - w / 2) * meta.orig_width,
            (cy - h / 2) * meta.orig_height,
            (cx + w / 2) * meta.orig_width,
            (cy + h / 2) * meta.orig_height,
        ],
        axis=1,
    )
    return boxes, scores, classes


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
