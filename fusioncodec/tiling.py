"""Networks run over a picture's grid in tiles, so that memory stays bounded at any size.

Arrays are numpy arrays or torch tensors (the onnx runtime and the torch backend share this
module); channels are the third axis from the end. A network here is translation-equivariant
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

#: an array of either runtime: a numpy array or a torch tensor
Tensor = Any

#: (rows r0:r1, columns c0:c1) of the grid -> the network's input for that region
Reader = Callable[[int, int, int, int], Tensor]


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


def _empty(like: Tensor, shape: tuple[int, ...], dtype: Any) -> Tensor:
    """An uninitialised array of ``like``'s kind and device (``dtype`` or ``like``'s)."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=dtype or like.dtype)
    return like.new_empty(shape, dtype=dtype or like.dtype)


def run_tiled(
    network: Callable[[Any], Tensor],
    read: Callable[[int, int, int, int], Any],
    grid: tuple[int, int],
    tile: int,
    halo: int,
    scale_out: int = 1,
    dtype: Any = None,
) -> Tensor:
    """``network`` over the grid, tile by tile; the outputs assembled (as ``dtype``)."""
    out: list[Tensor] = []
    s = scale_out

    def write(r0: int, r1: int, c0: int, c1: int, part: Tensor) -> None:
        if not out:
            shape = (*part.shape[:-2], grid[0] * s, grid[1] * s)
            out.append(_empty(part, shape, dtype))
        out[0][..., r0 * s : r1 * s, c0 * s : c1 * s] = part

    for_tiles(network, read, grid, tile, halo, write, scale_out)
    return out[0]


def reader(*sources: Tensor, scale_in: int = 1) -> Reader:
    """A :data:`Reader` that cuts the region out of each tensor (``scale_in`` samples per
    grid unit) and concatenates them along the channels, as float64 if any is an integer
    tensor (fixed-point values) and as they are otherwise."""

    def read(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        k = scale_in
        parts = [s[..., r0 * k : r1 * k, c0 * k : c1 * k] for s in sources]
        if isinstance(parts[0], np.ndarray):
            if any(p.dtype.kind != "f" for p in parts):
                parts = [p.astype(np.float64) for p in parts]
            return parts[0] if len(parts) == 1 else np.concatenate(parts, -3)
        if any(not p.is_floating_point() for p in parts):
            parts = [p.double() for p in parts]
        import torch  # the parts are torch tensors: torch is loaded already

        return parts[0] if len(parts) == 1 else torch.cat(parts, -3)

    return read


def tiled(
    network: Callable[[Tensor], Tensor],
    x: Tensor,
    tile: int,
    halo: int,
    scale_in: int = 1,
    scale_out: int = 1,
    dtype: Any = None,
) -> Tensor:
    """``network(x)`` computed in tiles of a grid with ``scale_in`` samples of ``x`` per unit."""
    grid = (x.shape[-2] // scale_in, x.shape[-1] // scale_in)
    return run_tiled(network, reader(x, scale_in=scale_in), grid, tile, halo, scale_out, dtype)
