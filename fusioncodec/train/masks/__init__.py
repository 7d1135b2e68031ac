"""Edge-mask targets for the SA-ICM machine layer, made once per training image and stored.

Three sources (:mod:`.sources`) give the object boundaries of an image as a thin boolean edge
map:

* SAM (segment-anything's automatic mask generator): :func:`sam_masks` / :func:`sam_edges`
  keep the masks whose *predicted IoU* (SAM's own quality estimate, ``predicted_iou``) is
  above ``alpha``; :func:`build_sam` loads a real checkpoint, :func:`tiny_random_sam` builds a
  small random SAM from segment-anything's own classes for tests and smoke runs only.
* COCO instance annotations (polygons and RLE): :func:`coco_edges`.
* Label maps (:func:`label_map_edges`) or boundary maps (:func:`boundary_map_edges`) as PNG.

Thin edges are the pixels on either side of a mask boundary (:mod:`fusioncodec.train.edges`);
:func:`band` dilates them to ``EDGE_WIDTH`` pixels, the target the SA-ICM loss counts.
:func:`make_masks` (:mod:`.store`) writes one ``<out>/<relative stem>.png`` (uint8 0/255,
image size) per image and a ``manifest.jsonl`` (:func:`read_manifest`), skipping images
already done with the same parameters.  No click here: ``fusioncodec.cli.masks`` is the
``fcodec masks`` command.
"""

from __future__ import annotations

from fusioncodec.coco import load_coco
from fusioncodec.train.edges import EDGE_WIDTH
from fusioncodec.train.masks.sources import (
    DEFAULT_ALPHA,
    DEFAULT_POINTS_PER_SIDE,
    DEFAULT_STABILITY,
    MAP_SUFFIXES,
    SAM_EMBED_DIMS,
    SAM_MODELS,
    SOURCES,
    MaskError,
    band,
    boundary_map_edges,
    build_generator,
    build_sam,
    coco_edges,
    coco_masks,
    label_map_edges,
    masks_edges,
    sam_edges,
    sam_masks,
    tiny_random_sam,
)
from fusioncodec.train.masks.store import (
    FORBIDDEN,
    MANIFEST,
    Item,
    Summary,
    coco_items,
    folder_items,
    make_masks,
    overlay,
    pending_items,
    read_manifest,
    refuse_test_sets,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_POINTS_PER_SIDE",
    "DEFAULT_STABILITY",
    "EDGE_WIDTH",
    "FORBIDDEN",
    "MANIFEST",
    "MAP_SUFFIXES",
    "SAM_EMBED_DIMS",
    "SAM_MODELS",
    "SOURCES",
    "Item",
    "MaskError",
    "Summary",
    "band",
    "boundary_map_edges",
    "build_generator",
    "build_sam",
    "coco_edges",
    "coco_items",
    "coco_masks",
    "folder_items",
    "label_map_edges",
    "load_coco",
    "make_masks",
    "masks_edges",
    "overlay",
    "pending_items",
    "read_manifest",
    "refuse_test_sets",
    "sam_edges",
    "sam_masks",
    "tiny_random_sam",
]
