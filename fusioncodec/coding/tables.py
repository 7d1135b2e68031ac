"""Integer CDF tables coded with constriction's range coder, symbols grouped by table.

A table set holds one categorical distribution per index (one per channel for a factorized
prior, one per scale bucket for a Gaussian conditional), taken from compressai's 16-bit
quantized CDFs so encoder and decoder use the same integers.  The last symbol of every table
is an escape: a value outside the table's support is coded as the escape symbol followed by
the value itself under a uniform model over ``[-ESCAPE_RANGE, ESCAPE_RANGE)``.  Values beyond
that are clipped, and the clipped value is what both sides reconstruct.
"""

from __future__ import annotations

import constriction
import numpy as np

Categorical = constriction.stream.model.Categorical
Uniform = constriction.stream.model.Uniform
RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder

ESCAPE_RANGE = 1 << 16
_ESCAPE_MODEL = Uniform(2 * ESCAPE_RANGE)


class CategoricalTables:
    """Categorical models built from integer CDFs, with offsets (compressai's layout).

    ``quantized_cdf[t, :cdf_length[t]]`` is a 16-bit CDF whose last interval is the escape
    symbol; symbol ``v`` of table ``t`` is coded as category ``v - offset[t]``.
    """

    def __init__(self, quantized_cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray):
        cdf_length = np.asarray(cdf_length, dtype=np.int64)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.escape = cdf_length - 2  # category index of the escape symbol
        self.models = []
        for row, length in zip(np.asarray(quantized_cdf, dtype=np.int64), cdf_length, strict=True):
            pmf = np.diff(row[:length]).astype(np.float64)
            self.models.append(Categorical(pmf, perfect=False))

    def __len__(self) -> int:
        return len(self.models)

    @staticmethod
    def _groups(indexes: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        order = np.argsort(indexes, kind="stable")
        counts = np.bincount(indexes, minlength=0)
        groups, start = [], 0
        for table, count in enumerate(counts):
            if count:
                groups.append((table, start, start + int(count)))
                start += int(count)
        return order, groups

    def encode(self, encoder: RangeEncoder, values: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """Encode integer ``values`` (flat) with tables ``indexes``; return the coded values.

        The returned array equals ``values`` except where a value had to be clipped to the
        escape range, so the caller reconstructs exactly what the decoder will.
        """
        values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
        values = np.clip(values, -ESCAPE_RANGE, ESCAPE_RANGE - 1).astype(np.int64)
        indexes = indexes.astype(np.int64)
        categories = values - self.offset[indexes]
        escape = self.escape[indexes]
        escaped = (categories < 0) | (categories >= escape)
        categories = np.where(escaped, escape, categories).astype(np.int32)
        order, groups = self._groups(indexes)
        ordered = categories[order]
        for table, start, end in groups:
            encoder.encode(ordered[start:end], self.models[table])
        if escaped.any():
            encoder.encode((values[escaped] + ESCAPE_RANGE).astype(np.int32), _ESCAPE_MODEL)
        return values

    def decode(self, decoder: RangeDecoder, indexes: np.ndarray) -> np.ndarray:
        """Decode one integer per entry of ``indexes`` (flat), in the encoder's order."""
        indexes = indexes.astype(np.int64)
        order, groups = self._groups(indexes)
        ordered = np.empty(len(indexes), dtype=np.int64)
        for table, start, end in groups:
            ordered[start:end] = decoder.decode(self.models[table], end - start)
        categories = np.empty_like(ordered)
        categories[order] = ordered
        escaped = categories == self.escape[indexes]
        values = categories + self.offset[indexes]
        count = int(escaped.sum())
        if count:
            values[escaped] = decoder.decode(_ESCAPE_MODEL, count).astype(np.int64) - ESCAPE_RANGE
        return values
