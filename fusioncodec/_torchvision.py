"""One place that makes compressai and segment-anything importable without a working torchvision.

Both libraries import torchvision at load time, though the parts fusioncodec uses never call
it.  Where torchvision imports cleanly it is used as is.  Where it is missing or broken (its
only wheels for torch 2.13 need CUDA libraries, so on a CPU-only torch it raises at import),
a small stand-in module is registered instead.  It provides exactly the names those imports
ask for, implemented with torch and Pillow: ``transforms`` (an empty namespace),
``transforms.functional.resize``/``to_pil_image`` and ``ops.boxes.batched_nms``/``box_area``.

Call :func:`ensure_torchvision` before importing compressai or segment_anything.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch

_done = False
STUBBED = False


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order].float()
    area = _box_area(boxes)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[i + 1 :, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[i + 1 :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (area[i] + area[i + 1 :] - inter).clamp(min=1e-12)
        suppressed[i + 1 :] |= iou > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def _batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-wise NMS by offsetting each class's boxes apart (torchvision's trick)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _to_pil_image(pic):  # noqa: ANN001, ANN202 - mirrors torchvision's loose signature
    from PIL import Image

    if isinstance(pic, torch.Tensor):
        pic = pic.detach().cpu().numpy()
        if pic.ndim == 3:
            pic = pic.transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(pic))


def _resize(img, size):  # noqa: ANN001, ANN202
    from PIL import Image

    if isinstance(size, int):
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        return img.resize(size, Image.BILINEAR)
    h, w = size
    return img.resize((w, h), Image.BILINEAR)


def _module(name: str, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__fusioncodec_stub__ = True
    sys.modules[name] = mod
    return mod


def _install_stub() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    functional = _module(
        "torchvision.transforms.functional", resize=_resize, to_pil_image=_to_pil_image
    )
    transforms = _module("torchvision.transforms", functional=functional)
    boxes = _module("torchvision.ops.boxes", batched_nms=_batched_nms, box_area=_box_area)
    ops = _module("torchvision.ops", boxes=boxes, batched_nms=_batched_nms, box_area=_box_area)
    _module("torchvision", transforms=transforms, ops=ops, __version__="0+fusioncodec-stub")


def ensure_torchvision() -> None:
    """Make ``import torchvision`` succeed: the real package if it works, else the stand-in."""
    global _done, STUBBED
    if _done:
        return
    _done = True
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure (ImportError, RuntimeError from CUDA ops)
        _install_stub()
        STUBBED = True
