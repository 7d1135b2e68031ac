"""A latent codec's stored CDF tables (compressai's layout, as a weight file holds them):
checked, made into the range coder's table sets, and the least a payload can weigh."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fusioncodec.coding import CategoricalTables
from fusioncodec.coding.tables import cdf_problem, min_bits

EB, GC = "entropy_bottleneck", "gaussian_conditional"  # the two entropy models' names


def tables_of(arrays: Mapping[str, np.ndarray], module: str) -> CategoricalTables:
    return CategoricalTables(
        arrays[f"{module}._quantized_cdf"],
        arrays[f"{module}._cdf_length"],
        arrays[f"{module}._offset"],
    )


def tables_problem(arrays: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with a latent codec's stored CDF tables (shape, range, monotonicity)
    or its scale table, or None. Empty tables (a model never updated) are not checked:
    coding refuses them itself."""
    scale_table = np.asarray(arrays[f"{GC}.scale_table"], dtype=np.float64)
    for name, module, count in (
        ("z", EB, arrays[f"{EB}.quantiles"].shape[0]),
        ("y", GC, len(scale_table)),
    ):
        cdf = arrays[f"{module}._quantized_cdf"]
        if cdf.size == 0:
            continue
        length, offset = arrays[f"{module}._cdf_length"], arrays[f"{module}._offset"]
        if problem := cdf_problem(cdf, length, offset, count):
            return f"{name}: {problem}"
    if scale_table.size and (
        not np.isfinite(scale_table).all() or (np.diff(scale_table) <= 0).any()
    ):
        return "scale table not increasing"
    return None


def min_payload_bits(arrays: Mapping[str, np.ndarray], z_shape: tuple[int, int]) -> float:
    """A lower bound on any payload's size for a hyper-latent of ``z_shape``: a shorter
    payload cannot be valid, so the decoder refuses it before allocating anything."""
    bits = min_bits(arrays[f"{EB}._quantized_cdf"], arrays[f"{EB}._cdf_length"])
    return bits * z_shape[0] * z_shape[1]
