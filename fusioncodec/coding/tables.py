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
CHUNK = 1 << 20  # symbols per pass of the table bookkeeping
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

    def _cursors(self, indexes: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Where each table's run starts in the table-ordered symbols, and the runs
        ``(table, start, end)`` of the tables that occur, in table order."""
        counts = np.zeros(len(self.models), dtype=np.int64)
        for s in range(0, len(indexes), CHUNK):  # chunks: no int64 copy of all the indexes
            chunk = np.asarray(indexes[s : s + CHUNK], dtype=np.int64)
            counts += np.bincount(chunk, minlength=len(self.models))[: len(self.models)]
        ends = np.cumsum(counts)
        starts = ends - counts
        runs = [(t, int(starts[t]), int(ends[t])) for t in np.flatnonzero(counts)]
        return starts, runs

    @staticmethod
    def _positions(idx: np.ndarray, cursor: np.ndarray) -> np.ndarray:
        """Where each of a chunk's symbols sits in the table-ordered symbols (each table's in
        raster order); moves ``cursor`` past them."""
        order = np.argsort(idx, kind="stable")
        counts = np.bincount(idx, minlength=len(cursor))
        by_table = idx[order]
        rank = np.arange(len(idx)) - (np.cumsum(counts) - counts)[by_table]  # within its table
        positions = np.empty(len(idx), dtype=np.int64)
        positions[order] = cursor[by_table] + rank
        cursor += counts
        return positions

    def encode(self, encoder: RangeEncoder, values: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """Encode integer ``values`` (flat) with tables ``indexes``; return the coded values.

        The symbols go out grouped by table (each table's symbols in raster order), then the
        escaped values. The returned int32 array equals ``values`` except where a value had
        to be clipped to the escape range, so the caller reconstructs exactly what the
        decoder will. Work is done in chunks: a few MB besides the input and the output.
        """
        n = len(indexes)
        cursor, runs = self._cursors(indexes)
        ordered = np.empty(n, dtype=np.int32)
        coded = np.empty(n, dtype=np.int32)
        escapes: list[np.ndarray] = []
        for s in range(0, n, CHUNK):
            v = np.nan_to_num(np.asarray(values[s : s + CHUNK], dtype=np.float64), nan=0.0)
            v = np.clip(v, -ESCAPE_RANGE, ESCAPE_RANGE - 1).astype(np.int64)
            idx = np.asarray(indexes[s : s + CHUNK], dtype=np.int64)
            categories = v - self.offset[idx]
            escape = self.escape[idx]
            escaped = (categories < 0) | (categories >= escape)
            categories = np.where(escaped, escape, categories).astype(np.int32)
            if escaped.any():
                escapes.append(v[escaped])
            coded[s : s + len(v)] = v
            ordered[self._positions(idx, cursor)] = categories
        for table, start, end in runs:
            encoder.encode(ordered[start:end], self.models[table])
        if escapes:
            escaped_values = np.concatenate(escapes) + ESCAPE_RANGE
            encoder.encode(escaped_values.astype(np.int32), _ESCAPE_MODEL)
        return coded

    def decode(self, decoder: RangeDecoder, indexes: np.ndarray) -> np.ndarray:
        """Decode one integer per entry of ``indexes`` (flat), in the encoder's order; int32."""
        n = len(indexes)
        cursor, runs = self._cursors(indexes)
        ordered = np.empty(n, dtype=np.int32)
        for table, start, end in runs:
            ordered[start:end] = decoder.decode(self.models[table], end - start)
        values = np.empty(n, dtype=np.int32)
        escaped_at: list[np.ndarray] = []
        for s in range(0, n, CHUNK):
            idx = np.asarray(indexes[s : s + CHUNK], dtype=np.int64)
            categories = ordered[self._positions(idx, cursor)]
            escaped = categories == self.escape[idx]
            values[s : s + len(idx)] = categories + self.offset[idx]
            if escaped.any():
                escaped_at.append(s + np.flatnonzero(escaped))
        if escaped_at:
            where = np.concatenate(escaped_at)
            found = decoder.decode(_ESCAPE_MODEL, len(where)).astype(np.int64) - ESCAPE_RANGE
            values[where] = found
        return values


def cdf_problem(cdf: np.ndarray, length: np.ndarray, offset: np.ndarray, count: int) -> str | None:
    """What is wrong with ``count`` stored 16-bit CDF tables in compressai's layout (shape,
    offsets, lengths, monotonicity), or None."""
    if cdf.ndim != 2 or cdf.shape[0] != count or length.shape != (count,):
        return f"{tuple(cdf.shape)} tables, the card's sizes need {count}"
    if offset.shape != (count,) or np.abs(offset.astype(np.int64)).max() > ESCAPE_RANGE:
        return "offsets out of range"
    length = length.astype(np.int64)
    if length.min() < 3 or length.max() > cdf.shape[1]:
        return "table lengths out of range"
    cdf = cdf.astype(np.int64)
    inside = np.arange(cdf.shape[1])[None, :] < length[:, None]
    steps = np.diff(cdf, axis=1)[inside[:, 1:]]
    ends = np.take_along_axis(cdf, (length - 1)[:, None], 1)
    if (cdf[:, 0] != 0).any() or (ends != 1 << 16).any() or (steps < 1).any():
        return "not increasing 16-bit CDFs"
    return None


def min_bits(cdf: np.ndarray, length: np.ndarray) -> float:
    """A lower bound on the bits of one symbol from each table: ``-log2`` of its largest
    probability. Only tables whose top probability is clearly below 1 count (the coder's
    own quantisation of probabilities near 1 could make those symbols cheaper still), and
    only 90% of it."""
    cdf, length = cdf.astype(np.int64), length.astype(np.int64)
    inside = np.arange(cdf.shape[1] - 1)[None, :] < (length[:, None] - 1)
    largest = np.where(inside, np.diff(cdf, axis=1), 0).max(axis=1) / (1 << 16)
    return 0.9 * float(-np.log2(largest[largest <= 0.99]).sum())
