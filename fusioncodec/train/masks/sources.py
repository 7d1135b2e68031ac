"""Where edge masks come from: SAM's automatic masks, COCO instance masks, label maps or
boundary maps, each turned into thin boolean edges of the image (and the stored band)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fusioncodec.messages import error_reason
from fusioncodec.train.edges import EDGE_WIDTH, edge_band, label_boundaries, mask_boundaries

if TYPE_CHECKING:
    import torch

SOURCES = ("sam", "coco", "labels", "boundaries")
SAM_MODELS = ("vit_h", "vit_l", "vit_b", "tiny-random")
SAM_EMBED_DIMS = {"vit_h": 1280, "vit_l": 1024, "vit_b": 768}  # checks a checkpoint's model
DEFAULT_ALPHA = 0.78  # the reference trains with 0.78 and 0.93
DEFAULT_STABILITY = 0.95  # segment-anything's default stability_score_thresh
DEFAULT_POINTS_PER_SIDE = 32  # segment-anything's default grid (32 x 32 point prompts)
MAP_SUFFIXES = {"labels": "_segments.png", "boundaries": "_boundaries.png"}


class MaskError(ValueError):
    """An expected problem with an input or a setting, described in one line."""


# --------------------------------------------------------------------------- edges per source


def masks_edges(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Thin boolean edges (H x W) of binary instance masks: the union of their boundaries."""
    return mask_boundaries(masks, shape)


def band(edges: np.ndarray, width: int = EDGE_WIDTH) -> np.ndarray:
    """The stored target: thin edges dilated to a ``width`` px band, uint8 0/255."""
    return edge_band(edges, width) * np.uint8(255)


def sam_masks(image: np.ndarray, generator: Any, alpha: float) -> list[np.ndarray]:
    """SAM's automatic masks of an RGB uint8 image whose predicted IoU is above ``alpha``.

    ``generator`` is a ``SamAutomaticMaskGenerator`` in ``binary_mask`` mode (or anything whose
    ``generate`` returns records with ``segmentation`` and ``predicted_iou``).  Records are
    filtered again here so the result is right whatever ``pred_iou_thresh`` it was built with.
    """
    records = generator.generate(np.ascontiguousarray(image))
    return [np.asarray(r["segmentation"], bool) for r in records if r["predicted_iou"] > alpha]


def sam_edges(image: np.ndarray, generator: Any, alpha: float) -> np.ndarray:
    """Thin boolean edges of the SAM masks of ``image`` whose predicted IoU is above ``alpha``."""
    return masks_edges(sam_masks(image, generator, alpha), image.shape[:2])


def coco_masks(coco: Any, image_id: int) -> list[np.ndarray]:
    """Binary masks of all instances of one image (polygons, RLE, crowd regions included)."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
    return [coco.annToMask(a).astype(bool) for a in anns if a.get("segmentation")]


def coco_edges(coco: Any, image_id: int) -> np.ndarray:
    """Thin boolean edges of the instance masks of COCO image ``image_id``."""
    info = coco.loadImgs(image_id)[0]
    return masks_edges(coco_masks(coco, image_id), (info["height"], info["width"]))


def _read_map(path: Path, boundaries: bool = False) -> np.ndarray:
    """Pixels of a map image; for boundaries, palette images become colours, alpha is dropped."""
    try:
        with Image.open(path) as im:
            if boundaries and im.mode == "P":
                im = im.convert("RGBA")
            arr = np.asarray(im)
            if boundaries and im.mode in ("LA", "RGBA", "PA"):
                arr = arr[..., :-1]  # alpha is not a boundary
            return arr
    except FileNotFoundError:
        raise MaskError(f"{path}: no such file") from None
    except Exception as exc:  # Pillow raises many types on corrupt files
        raise MaskError(f"{path}: cannot read image ({error_reason(exc)})") from None


def label_map_edges(path: str | Path) -> np.ndarray:
    """Thin boolean edges where neighbouring labels differ (grey, 16-bit, palette or colour map)."""
    labels = _read_map(Path(path))
    if labels.ndim == 3:  # colour-coded labels: one integer per colour
        weights = 256 ** np.arange(labels.shape[-1], dtype=np.int64)
        labels = (labels.astype(np.int64) * weights).sum(-1)
    return label_boundaries(labels)


def boundary_map_edges(path: str | Path) -> np.ndarray:
    """Thin boolean edges from a boundary map: every non-zero pixel is a boundary."""
    arr = _read_map(Path(path), boundaries=True)
    if arr.ndim == 3:
        arr = arr.any(-1)
    return arr > 0


# --------------------------------------------------------------------------- SAM models


def _torch_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MaskError("--device cuda: no CUDA device is available here")
    return torch.device(device)


def tiny_random_sam(seed: int = 0, img_size: int = 64) -> Any:
    """A small SAM with random weights, for tests and smoke runs only (its masks mean nothing).

    Built from segment-anything's own classes (``ImageEncoderViT``, ``PromptEncoder``,
    ``MaskDecoder`` with ``TwoWayTransformer``) at ``img_size`` px input (images are resized so
    their longer side is ``img_size``), 32 channels and 2 encoder blocks: a few hundred ms per
    image on a CPU.  The mask-quality head is fixed to predict an IoU of exactly 0.5, so with
    ``alpha >= 0.5`` no mask passes and with ``alpha < 0.5`` all do (before stability and NMS).
    """
    import torch

    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    patch, dim = 16, 32
    if img_size % patch:
        raise MaskError(f"tiny SAM image size must be a multiple of {patch}, got {img_size}")
    grid = img_size // patch
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=img_size,
                patch_size=patch,
                embed_dim=dim,
                depth=2,
                num_heads=2,
                mlp_ratio=2.0,
                out_chans=dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=2,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim,
                image_embedding_size=(grid, grid),
                input_image_size=(img_size, img_size),
                mask_in_chans=4,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                transformer_dim=dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
        )
    finally:
        torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        head = sam.mask_decoder.iou_prediction_head.layers[-1]
        head.weight.zero_()
        head.bias.fill_(0.5)
    return sam.eval()


def build_sam(model: str, checkpoint: str | Path | None, device: str = "auto") -> Any:
    """A SAM in eval mode on ``device``: ``tiny-random`` or a registry model with its checkpoint.

    ``vit_h``/``vit_l``/``vit_b`` are built with ``segment_anything.sam_model_registry[model]``
    and loaded from ``checkpoint`` (a local file; nothing is ever downloaded).  The state dict
    is read first, on the CPU, with ``weights_only=True``, and checked against ``model`` before
    the (large) network is built.
    """
    if model not in SAM_MODELS:
        raise MaskError(f"unknown SAM model {model!r}; use one of {', '.join(SAM_MODELS)}")
    target = _torch_device(device)
    if model == "tiny-random":
        if checkpoint is not None:
            raise MaskError("--sam-model tiny-random has random weights and takes no checkpoint")
        return tiny_random_sam().to(target)
    if checkpoint is None:
        raise MaskError(f"--sam-model {model} needs --sam-checkpoint PATH (a local .pth file)")
    path = Path(checkpoint)
    if not path.is_file():
        raise MaskError(f"SAM checkpoint not found: {path} (download it yourself; see MASKS.md)")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors of many kinds
        raise MaskError(
            f"{path}: not a readable PyTorch checkpoint ({error_reason(exc)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    key = "image_encoder.patch_embed.proj.weight"
    if not isinstance(state, dict) or key not in state:
        raise MaskError(f"{path}: not a SAM checkpoint (no {key})")
    dim = int(state[key].shape[0])
    if dim != SAM_EMBED_DIMS[model]:
        found = [name for name, d in SAM_EMBED_DIMS.items() if d == dim]
        hint = f"; use --sam-model {found[0]}" if found else ""
        raise MaskError(f"{path}: checkpoint is not a {model} model (embed dim {dim}){hint}")

    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from segment_anything import sam_model_registry

    sam = sam_model_registry[model](checkpoint=None)
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        raise MaskError(f"{path}: does not fit {model} ({error_reason(exc)})") from None
    return sam.eval().to(target)


def build_generator(
    sam: Any,
    alpha: float,
    points_per_side: int = DEFAULT_POINTS_PER_SIDE,
    stability: float = DEFAULT_STABILITY,
    points_per_batch: int = 64,
) -> Any:
    """``SamAutomaticMaskGenerator`` keeping masks with predicted IoU above ``alpha``.

    ``stability`` is the generator's ``stability_score_thresh`` (segment-anything's default
    0.95); no crops, no small-region clean-up (which would need OpenCV).
    """
    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(
        sam,
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=alpha,
        stability_score_thresh=stability,
        output_mode="binary_mask",
    )
