"""Edge-mask targets for the SA-ICM loss: object boundaries turned into bands of fixed width.

Sources: label/segment maps (a boundary wherever a pixel's label differs from a neighbour's),
boundary maps (non-zero = boundary), and instance masks (COCO polygons/RLE, SAM masks).
Every boundary is dilated to a band ``EDGE_WIDTH`` pixels wide, so the loss covers the pixels
on both sides of an edge that a detector's or segmenter's filters actually look at.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

EDGE_WIDTH = 5  # pixels across a dilated edge band


def dilate(edges: np.ndarray, width: int = EDGE_WIDTH) -> np.ndarray:
    """Grow a thin boolean edge map into a band ``width`` pixels wide (square structuring)."""
    if width <= 1:
        return edges.astype(bool)
    return ndimage.binary_dilation(edges, structure=np.ones((width, width), bool))


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Thin boundaries of a label map: pixels whose right or lower neighbour differs."""
    edges = np.zeros(labels.shape, bool)
    diff_x = labels[:, 1:] != labels[:, :-1]
    diff_y = labels[1:, :] != labels[:-1, :]
    edges[:, 1:] |= diff_x
    edges[:, :-1] |= diff_x
    edges[1:, :] |= diff_y
    edges[:-1, :] |= diff_y
    return edges


def mask_boundaries(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of the thin boundaries of binary instance masks (each H x W)."""
    edges = np.zeros(shape, bool)
    for mask in masks:
        edges |= label_boundaries(mask.astype(np.uint8))
    return edges


def edge_band(edges: np.ndarray, width: int = EDGE_WIDTH) -> np.ndarray:
    """uint8 mask (0/1) of the dilated band around thin edges."""
    return dilate(edges, width).astype(np.uint8)
