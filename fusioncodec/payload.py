"""One layer's payload: a constriction range-coder stream (little-endian 32-bit words) that
starts with the layer's binding to its file, holds the latent codec's symbols, and ends with
the CRC-32 of the decoded latent. The decoder encodes every symbol again as it reads it, so
it accepts exactly the words the encoder wrote and nothing else."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from fusioncodec.coding import CategoricalTables, RangeDecoder, RangeEncoder
from fusioncodec.coding.tables import Uniform
from fusioncodec.container import LAYER_KINDS
from fusioncodec.errors import FormatError
from fusioncodec.exact.latent import HyperAnalysis, LatentModel

__all__ = ["decode_payload", "encode_payload", "latent_check", "layer_binding"]

_BINDING_MODEL = Uniform(1 << 16)


def layer_binding(
    kind: str, quality: float, width: int, height: int, m: int, machine_payload: bytes = b""
) -> int:
    """The 32-bit value a layer's payload starts with: the CRC-32 of the header fields it
    was coded for (and, for the human layer, of the machine payload it is conditioned on).

    A payload moved to another file, or under an edited header, fails at its first word.
    """
    fields = struct.pack("<BfHHB", LAYER_KINDS.index(kind), quality, width, height, m)
    return zlib.crc32(fields + machine_payload)


def _write_word(coder: RangeEncoder, word: int) -> None:
    """A 32-bit value as two uniform 16-bit symbols, low half first (binding, latent check)."""
    coder.encode(np.array([word & 0xFFFF, word >> 16], dtype=np.int32), _BINDING_MODEL)


def _read_word(decoder: RangeDecoder) -> int:
    low, high = decoder.decode(_BINDING_MODEL, 2)
    return int(low) | int(high) << 16


def latent_check(y_hat: np.ndarray) -> int:
    """CRC-32 of the decoded latent's float32 bytes (little-endian, NCHW), which are the same
    on every machine: the value that ends every payload."""
    return zlib.crc32(np.ascontiguousarray(y_hat, dtype="<f4"))  # in place: no 500 MB copy


def encode_payload(
    coder: LatentModel,
    y: np.ndarray,
    position: float,
    hyper_analysis: HyperAnalysis,
    context: np.ndarray | None = None,
    binding: int | None = None,
    gain: np.ndarray | None = None,
) -> tuple[bytes, np.ndarray]:
    """One layer's range-coder stream (``binding`` first, if given; the latent's check
    value last) and the decoder's exact reconstruction of the latent (see
    :meth:`fusioncodec.exact.LatentModel.compress` for the arguments)."""
    encoder = RangeEncoder()
    if binding is not None:
        _write_word(encoder, binding)
    y_hat = coder.compress(y, position, encoder, hyper_analysis, context, gain)
    _write_word(encoder, latent_check(y_hat))
    return encoder.get_compressed().astype("<u4").tobytes(), y_hat


class EchoReader:
    """The decoder's symbols, each encoded again into an echo as it is read: the echo of a
    payload the encoder made comes out word for word, anything else does not; reading stops
    as soon as the echo needs more than ``words`` words (the payload ran out before the
    latent did)."""

    def __init__(self, decoder: RangeDecoder, echo: RangeEncoder, words: int) -> None:
        self.decoder, self.echo, self.words = decoder, echo, words

    def __call__(self, tables: CategoricalTables, indexes: np.ndarray) -> np.ndarray:
        values = tables.decode(self.decoder, indexes)
        tables.encode(self.echo, values, indexes)
        if self.echo.num_words() > self.words:
            raise ValueError("the payload ends before the latent does")
        return values


def decode_payload(
    coder: LatentModel,
    payload: bytes,
    z_shape: tuple[int, int],
    position: float,
    context: np.ndarray | None = None,
    binding: int | None = None,
) -> np.ndarray:
    """Decode one layer's payload, which must be exactly what the encoder wrote.

    The decoded symbols are range-coded again as they come: an empty, zeroed, truncated,
    extended or otherwise altered payload (even one whose CRC was recomputed) fails here
    instead of decoding to a wrong picture.
    """
    if len(payload) % 4:
        raise FormatError("corrupted layer payload (length is not a whole number of words)")
    if 8 * len(payload) < coder.min_payload_bits(z_shape):
        raise FormatError(
            f"corrupted layer payload ({len(payload)} bytes cannot hold a picture of the size "
            "in the header)"
        )
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    echo = RangeEncoder()
    try:
        decoder = RangeDecoder(words)
        if binding is not None:
            if _read_word(decoder) != binding:
                raise FormatError(
                    "layer payload not coded for this file (its header's quality or size, or "
                    "the machine layer under it, differ from the encoder's)"
                )
            _write_word(echo, binding)
        y = coder.decompress(EchoReader(decoder, echo, len(words)), z_shape, position, context)
        check = latent_check(y)
        if _read_word(decoder) != check:
            raise FormatError("corrupted layer payload (the decoded latent fails its check)")
        _write_word(echo, check)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise FormatError(f"corrupted layer payload ({exc})") from None
    if not np.array_equal(echo.get_compressed(), words):
        raise FormatError(
            "corrupted layer payload (its symbols do not re-encode to it: damaged, cut short "
            "or with data appended)"
        )
    return y
