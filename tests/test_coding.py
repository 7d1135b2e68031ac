"""Tests for the entropy-coding tables (fusioncodec.coding.tables) with constriction."""

from __future__ import annotations

import numpy as np
import pytest

from fusioncodec.coding import CategoricalTables, RangeDecoder, RangeEncoder
from fusioncodec.coding.tables import ESCAPE_RANGE

PRECISION = 1 << 16


def quantize_pmf(pmf: np.ndarray, tail: float = 1e-3) -> np.ndarray:
    """A compressai-style 16-bit CDF: ``len(pmf)`` symbols plus an escape interval.

    Every interval gets at least one count, so every symbol (and the escape) is codable.
    """
    probs = np.append(np.asarray(pmf, dtype=np.float64) / np.sum(pmf) * (1 - tail), tail)
    counts = np.maximum(1, np.floor(probs * PRECISION).astype(np.int64))
    counts[np.argmax(counts)] += PRECISION - counts.sum()
    assert counts.min() >= 1 and counts.sum() == PRECISION
    return np.concatenate([[0], np.cumsum(counts)])


def make_tables(pmfs: list[np.ndarray], offsets: list[int]) -> tuple[CategoricalTables, list]:
    """Tables in compressai's padded layout; also returns each table's 16-bit CDF."""
    cdfs = [quantize_pmf(p) for p in pmfs]
    width = max(len(c) for c in cdfs)
    quantized = np.zeros((len(cdfs), width), dtype=np.int32)
    for row, cdf in zip(quantized, cdfs, strict=True):
        row[: len(cdf)] = cdf
    lengths = np.array([len(c) for c in cdfs], dtype=np.int32)
    return CategoricalTables(quantized, lengths, np.array(offsets, dtype=np.int32)), cdfs


def gaussian_pmf(scale: float, half_width: int) -> np.ndarray:
    x = np.arange(-half_width, half_width + 1, dtype=np.float64)
    return np.exp(-0.5 * (x / scale) ** 2) + 1e-9


def random_tables(rng: np.random.Generator, count: int) -> tuple[CategoricalTables, list, list]:
    pmfs, offsets = [], []
    for _ in range(count):
        half = int(rng.integers(0, 12))
        pmfs.append(gaussian_pmf(float(rng.uniform(0.2, 6.0)), half))
        offsets.append(-half + int(rng.integers(-3, 4)))
    tables, cdfs = make_tables(pmfs, offsets)
    return tables, cdfs, offsets


def round_trip(
    tables: CategoricalTables, values: np.ndarray, indexes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    encoder = RangeEncoder()
    coded = tables.encode(encoder, values, indexes)
    words = encoder.get_compressed()
    decoded = tables.decode(RangeDecoder(words), indexes)
    return coded, decoded, words


def test_escape_index_is_last_category():
    tables, cdfs, offsets = random_tables(np.random.default_rng(1), 5)
    assert len(tables) == 5
    for t, cdf in enumerate(cdfs):
        assert tables.escape[t] == len(cdf) - 2  # number of regular symbols
        assert tables.offset[t] == offsets[t]


def test_round_trip_with_far_out_of_support_values():
    rng = np.random.default_rng(0)
    tables, cdfs, offsets = random_tables(rng, 8)
    n = 4000
    indexes = rng.integers(0, len(tables), n)
    values = np.rint(rng.normal(0, 3, n)).astype(np.int64)
    far = rng.random(n) < 0.1
    values[far] = rng.integers(-ESCAPE_RANGE, ESCAPE_RANGE, far.sum())
    values[:6] = [ESCAPE_RANGE - 1, -ESCAPE_RANGE, 0, -1, 12345, -54321]
    coded, decoded, _ = round_trip(tables, values, indexes)
    assert np.array_equal(coded, values)
    assert np.array_equal(decoded, values)
    assert decoded.dtype == coded.dtype == np.int32  # |value| <= 2**16: half the memory


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float32, np.float64])
def test_support_boundaries_decode_exactly(dtype):
    """First/last regular symbol, and the first values on either side that need the escape."""
    tables, cdfs, offsets = random_tables(np.random.default_rng(2), 6)
    values, indexes = [], []
    for t, off in enumerate(offsets):
        last = off + int(tables.escape[t]) - 1
        for v in (off, last, off - 1, last + 1, off - 2, last + 2):
            values.append(v)
            indexes.append(t)
    values = np.array(values).astype(dtype)
    indexes = np.array(indexes)
    coded, decoded, _ = round_trip(tables, values, indexes)
    assert np.array_equal(coded, values.astype(np.int64))
    assert np.array_equal(decoded, values.astype(np.int64))


def test_values_beyond_escape_range_are_clipped_consistently():
    rng = np.random.default_rng(3)
    tables, _, _ = random_tables(rng, 4)
    values = np.array(
        [ESCAPE_RANGE, ESCAPE_RANGE + 1, 10**6, 2**40, -ESCAPE_RANGE - 1, -(10**6), -(2**40), 0, 7]
    )
    indexes = rng.integers(0, len(tables), len(values))
    coded, decoded, _ = round_trip(tables, values, indexes)
    expected = np.clip(values, -ESCAPE_RANGE, ESCAPE_RANGE - 1)
    assert np.array_equal(coded, expected)
    assert np.array_equal(decoded, coded)


def test_large_float_values_are_clipped_consistently():
    """Symbols arrive as floats from torch.round; moderately large ones clip like ints."""
    tables, _, _ = random_tables(np.random.default_rng(4), 3)
    values = np.array([1e6, -1e6, 65535.0, -65536.0, 65536.0, 2.0**40, -(2.0**40)])
    indexes = np.array([0, 1, 2, 0, 1, 2, 0])
    coded, decoded, _ = round_trip(tables, values, indexes)
    assert np.array_equal(coded, np.clip(values, -ESCAPE_RANGE, ESCAPE_RANGE - 1))
    assert np.array_equal(decoded, coded)


def test_huge_positive_float_clips_to_top_of_escape_range():
    tables, _, _ = random_tables(np.random.default_rng(5), 2)
    with np.errstate(invalid="ignore"):
        coded, decoded, _ = round_trip(tables, np.array([1e30, np.inf]), np.array([0, 1]))
    assert np.array_equal(decoded, coded)  # still consistent between the two sides
    assert np.array_equal(coded, [ESCAPE_RANGE - 1, ESCAPE_RANGE - 1])


def test_empty_input_codes_nothing():
    tables, _, _ = random_tables(np.random.default_rng(6), 3)
    encoder = RangeEncoder()
    coded = tables.encode(encoder, np.array([], dtype=np.float32), np.array([], dtype=np.int64))
    assert coded.size == 0
    words = encoder.get_compressed()
    assert words.size == 0
    decoded = tables.decode(RangeDecoder(words), np.array([], dtype=np.int64))
    assert decoded.size == 0


@pytest.mark.parametrize("used", [[0], [7], [2, 5], [0, 7], [3, 4, 6]])
def test_empty_table_groups(used):
    """Tables that no symbol uses (at the start, middle or end) are skipped on both sides."""
    rng = np.random.default_rng(7)
    tables, _, _ = random_tables(rng, 8)
    n = 500
    indexes = rng.choice(used, n)
    values = np.rint(rng.normal(0, 4, n)).astype(np.int64)
    values[::37] = 999
    coded, decoded, _ = round_trip(tables, values, indexes)
    assert np.array_equal(decoded, values)


def test_many_tables_interleaved_and_several_calls_on_one_stream():
    """Like the codec: one stream holds several encode calls with different table sets."""
    rng = np.random.default_rng(8)
    z_tables, _, _ = random_tables(rng, 16)
    y_tables, _, _ = random_tables(rng, 64)
    chunks = []
    for tables, n in ((z_tables, 300), (y_tables, 5000), (y_tables, 1), (z_tables, 777)):
        indexes = rng.integers(0, len(tables), n)
        values = np.rint(rng.laplace(0, 3, n)).astype(np.int64)
        values[rng.random(n) < 0.02] = rng.integers(-3000, 3000)
        chunks.append((tables, values, indexes))
    encoder = RangeEncoder()
    for tables, values, indexes in chunks:
        assert np.array_equal(tables.encode(encoder, values, indexes), values)
    decoder = RangeDecoder(encoder.get_compressed())
    for tables, values, indexes in chunks:
        assert np.array_equal(tables.decode(decoder, indexes), values)


def information_bits(cdfs: list, offsets: list, values: np.ndarray, indexes: np.ndarray) -> float:
    bits = 0.0
    for v, t in zip(values, indexes, strict=True):
        pmf = np.diff(cdfs[t])
        bits -= np.log2(pmf[v - offsets[t]] / PRECISION)
    return bits


def test_coded_size_close_to_information_content():
    rng = np.random.default_rng(9)
    tables, cdfs, offsets = random_tables(rng, 12)
    n = 20000
    indexes = rng.integers(0, len(tables), n)
    values = np.empty(n, dtype=np.int64)
    for t in range(len(tables)):
        pmf = np.diff(cdfs[t])[:-1].astype(np.float64)  # in-support symbols only
        mask = indexes == t
        values[mask] = rng.choice(len(pmf), mask.sum(), p=pmf / pmf.sum()) + offsets[t]
    coded, decoded, words = round_trip(tables, values, indexes)
    assert np.array_equal(decoded, values)
    ideal = information_bits(cdfs, offsets, values, indexes)
    actual = 32 * len(words)
    assert actual <= 1.01 * ideal + 3 * 32
    assert actual >= 0.99 * ideal - 3 * 32


def test_escape_costs_roughly_escape_plus_uniform_bits():
    """An escaped value costs -log2 P(escape) plus log2(2 * ESCAPE_RANGE) = 17 bits."""
    rng = np.random.default_rng(10)
    tables, cdfs, offsets = random_tables(rng, 1)
    n = 2000
    values = np.full(n, 40000, dtype=np.int64)
    _, decoded, words = round_trip(tables, values, np.zeros(n, dtype=np.int64))
    assert np.array_equal(decoded, values)
    per_value = -np.log2(np.diff(cdfs[0])[-1] / PRECISION) + 17
    assert abs(32 * len(words) - n * per_value) <= 0.01 * n * per_value + 3 * 32


def test_real_model_tables_round_trip(tiny_codec):
    """The z (factorized) and y (Gaussian scale) tables of a real model, with escapes."""
    rng = np.random.default_rng(11)
    for tables in tiny_codec.model.machine.latent.coder().tables():
        n = 6000
        indexes = rng.integers(0, len(tables), n)
        centre = tables.offset[indexes] + tables.escape[indexes] // 2
        values = centre + np.rint(rng.normal(0, 2, n)).astype(np.int64)
        values[rng.random(n) < 0.05] = rng.integers(-ESCAPE_RANGE, ESCAPE_RANGE)
        coded, decoded, _ = round_trip(tables, values.astype(np.float32), indexes)
        assert np.array_equal(coded, values)
        assert np.array_equal(decoded, values)


def test_chunked_coding_keeps_the_stream_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Symbols are grouped by table over the whole array, whatever the chunk size."""
    from fusioncodec.coding import tables as module

    rng = np.random.default_rng(7)
    tables, _, _ = random_tables(rng, 30)
    n = 25_000
    indexes = rng.integers(0, len(tables), n).astype(np.int32)
    values = np.rint(rng.normal(0, 4, n))
    values[rng.random(n) < 0.03] = 99_999  # escaped (and clipped)
    whole = round_trip(tables, values, indexes)
    monkeypatch.setattr(module, "CHUNK", 777)
    chunked = round_trip(tables, values, indexes)
    for a, b in zip(whole, chunked, strict=True):
        assert np.array_equal(a, b)
