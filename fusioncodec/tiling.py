"""Networks run over a picture's grid in tiles, so that memory stays bounded at any size.

Both runtimes tile through this module: networks take whatever the reader gives (numpy
arrays, or torch tensors in the torch runtime) and :func:`run_tiled` assembles numpy
outputs; channels are the third axis from the end. A network here is translation-equivariant
on a grid of latent positions: it maps a region of the grid (``scale_in`` input samples per
grid unit and side) to the same region at ``scale_out`` output samples per unit. Each tile
is computed from its region grown by ``halo`` grid units on every side, clipped at the
grid's edges (where the network pads just as it does on the whole grid), and cropped back.
When ``halo`` covers the network's receptive field, an integer network gives exactly the
untiled result and a float network the same up to rounding; a grid of one tile is one call,
as without tiling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: a tile's output: a numpy array, or (for :func:`for_tiles`) a torch tensor
Tensor = Any


def spans(size: int, tile: int) -> list[tuple[int, int]]:
    """``[start, end)`` pieces of ``range(size)``, ``tile`` long (the last one shorter)."""
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


#: receives each tile's output: (rows r0:r1, columns c0:c1 of the grid, the output)
Writer = Callable[[int, int, int, int, Tensor], None]


def for_tiles(
    network: Callable[[Any], Tensor],
    read: Callable[[int, int, int, int], Any],
    grid: tuple[int, int],
    tile: int,
    halo: int,
    write: Writer,
    scale_out: int = 1,
) -> None:
    """``network`` over the grid, tile by tile, each tile's cropped output to ``write``."""
    s = scale_out
    for r0, r1 in spans(grid[0], tile):
        for c0, c1 in spans(grid[1], tile):
            a0, a1 = max(r0 - halo, 0), min(r1 + halo, grid[0])
            b0, b1 = max(c0 - halo, 0), min(c1 + halo, grid[1])
            part = network(read(a0, a1, b0, b1))
            write(
                r0,
                r1,
                c0,
                c1,
                part[..., (r0 - a0) * s : (r1 - a0) * s, (c0 - b0) * s : (c1 - b0) * s],
            )


def run_tiled(
    network: Callable[[Any], np.ndarray],
    read: Callable[[int, int, int, int], Any],
    grid: tuple[int, int],
    tile: int,
    halo: int,
    scale_out: int = 1,
    dtype: Any = None,
) -> np.ndarray:
    """``network`` over the grid, tile by tile; the numpy outputs assembled (as ``dtype``)."""
    out: list[np.ndarray] = []
    s = scale_out

    def write(r0: int, r1: int, c0: int, c1: int, part: np.ndarray) -> None:
        if not out:
            shape = (*part.shape[:-2], grid[0] * s, grid[1] * s)
            out.append(np.empty(shape, dtype=dtype or part.dtype))
        out[0][..., r0 * s : r1 * s, c0 * s : c1 * s] = part

    for_tiles(network, read, grid, tile, halo, write, scale_out)
    return out[0]
