"""Pictures into an object detector and boxes out of it (numpy only): the letterbox or
plain resize of the input, the YOLOX and FastestDet output decoders, and the common
post-processing (score threshold, pre-NMS top-k, class-wise NMS, at most N detections).
The detectors themselves (ONNX models, built-ins, plugins) are :mod:`.detectors`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

SCORE_THRESHOLD = 0.001
NMS_IOU = 0.65
MAX_DETECTIONS = 100
PRE_NMS_TOPK = 3000


class DetectorError(ValueError):
    """A detector cannot be built, loaded or run (one-line message)."""


class InputConvention(Protocol):
    """How a detector wants its input picture (a :class:`~.detectors.Detector` is one)."""

    input_size: tuple[int, int]  # (width, height)
    letterbox: bool
    bgr: bool
    scale: float
    pad_value: float
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None


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


# --------------------------------------------------------------------------- pre-processing


def resize_bilinear(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
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


def preprocess(detector: InputConvention, image: Image.Image) -> tuple[np.ndarray, Meta]:
    """PIL image -> float32 1x3xHxW input tensor and the :class:`Meta` of the mapping."""
    rgb = np.asarray(image.convert("RGB"))
    orig_h, orig_w = rgb.shape[:2]
    in_w, in_h = detector.input_size
    if detector.letterbox:
        r = min(in_w / orig_w, in_h / orig_h)
        new_w, new_h = max(1, int(orig_w * r)), max(1, int(orig_h * r))
        canvas = np.full((in_h, in_w, 3), detector.pad_value, dtype=np.float32)
        canvas[:new_h, :new_w] = resize_bilinear(rgb, new_w, new_h)
        meta = Meta(orig_w, orig_h, in_w, in_h, r, r, True)
    else:
        canvas = resize_bilinear(rgb, in_w, in_h)
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
