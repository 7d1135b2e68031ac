"""Hostile ``.fcb`` files for the fuzz harness: mutations and the judgement of their decode.

A mutation changes a valid file by truncation, bit flips, header-field edits (with or
without recomputing the CRCs), payload swaps between layers or splices from another file.
:func:`judge` decodes the result and names the outcome.  Allowed outcomes:

* ``error``: a one-line :class:`~fusioncodec.errors.FusionCodecError`;
* ``same``: the decoded picture equals the original's (e.g. only the model name changed);
* ``edited``: a picture from an unchanged payload under a header whose fields were edited
  and whose CRC was recomputed (a valid file with other meaning, not a damaged stream);
* ``donor``: the other picture, exactly, from a machine payload spliced in whole from a
  file of the same size (an intact stream of another file).

Anything else (a picture from a changed payload, another exception, a message over one
line, more than :data:`TIME_LIMIT` seconds) is a failure, named ``BAD ...``.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fusioncodec.container import (
    FIXED_FIELDS,
    LAYER_ENTRY_FIELDS,
    LAYER_ENTRY_SIZE,
    LAYER_KINDS,
    MIN_HEADER_SIZE,
    Container,
    Layer,
    layer_entry_offset,
    peek_header,
)
from fusioncodec.errors import FusionCodecError

if TYPE_CHECKING:
    from fusioncodec.scalable import TwoLayerCodec as Codec

TIME_LIMIT = 10.0
KINDS = ("truncate", "flip", "flip-crc", "field", "field-crc", "swap", "splice")
_FIELDS = {name: FIXED_FIELDS[name] for name in ("width", "height", "m", "name_len")}
_CRC = "<I"


@dataclass(frozen=True)
class Mutation:
    kind: str
    data: bytes
    detail: str


def _recrc(data: bytes) -> bytes:
    """Recompute the header CRC and every payload CRC that still fits the file."""
    buf = bytearray(data)
    at, fmt = FIXED_FIELDS["header_size"]
    if len(buf) < FIXED_FIELDS["width"][0]:
        return bytes(buf)
    (size,) = struct.unpack_from(fmt, buf, at)
    crc_at = size - struct.calcsize(_CRC)
    if size > len(buf) or size < MIN_HEADER_SIZE:
        return bytes(buf)
    name_len = buf[FIXED_FIELDS["name_len"][0]]
    count_at = layer_entry_offset(name_len, 0) - 1
    start = size
    if count_at + 1 >= crc_at:
        return bytes(buf)
    length_at, length_fmt = LAYER_ENTRY_FIELDS["length"]
    for i in range(buf[count_at]):
        entry = layer_entry_offset(name_len, i)
        if entry + LAYER_ENTRY_SIZE > crc_at:
            break
        (length,) = struct.unpack_from(length_fmt, buf, entry + length_at)
        payload = bytes(buf[start : start + length])
        crc = zlib.crc32(payload)
        struct.pack_into(_CRC, buf, entry + LAYER_ENTRY_FIELDS["crc32"][0], crc)
        start += length
    struct.pack_into(_CRC, buf, crc_at, zlib.crc32(bytes(buf[:crc_at])))
    return bytes(buf)


def mutate(data: bytes, other: bytes, kind: str, rng: np.random.Generator) -> Mutation:
    """One mutation of ``data`` (``other``: a valid file of another picture, for splices)."""
    size = len(data)
    if kind == "truncate":
        cut = int(rng.integers(0, size))
        return Mutation(kind, data[:cut], f"first {cut} of {size} bytes")
    if kind in ("flip", "flip-crc"):
        buf = bytearray(data)
        positions = rng.integers(0, size, int(rng.integers(1, 9)))
        for p in positions:
            buf[p] ^= 1 << int(rng.integers(0, 8))
        out = _recrc(bytes(buf)) if kind == "flip-crc" else bytes(buf)
        return Mutation(kind, out, f"bits at {sorted(int(p) for p in positions)}")
    if kind in ("field", "field-crc"):
        buf = bytearray(data)
        name = str(rng.choice([*_FIELDS, "quality", "length", "version"]))
        if name == "version":
            buf[FIXED_FIELDS["version"][0]] = int(rng.integers(0, 256))
        elif name in ("quality", "length"):
            header = peek_header(data)
            i = int(rng.integers(0, len(header.layers)))
            at, fmt = LAYER_ENTRY_FIELDS[name]
            at += layer_entry_offset(len(header.model_name.encode()), i)
            if name == "quality":
                value = float(rng.choice([0.0, 0.5, 1.0, 3.3, 8.0, 8.5, 100.0, -1.0, 1e30]))
            else:
                value = int(rng.integers(0, 2 * header.layers[i].length + 8))
            struct.pack_into(fmt, buf, at, value)
            name = f"{name}[{LAYER_KINDS[i]}]={value}"
        else:
            offset, fmt = _FIELDS[name]
            top = 0xFFFF if fmt == "<H" else 0xFF
            value = int(rng.choice([0, 1, int(rng.integers(0, top + 1)), top]))
            struct.pack_into(fmt, buf, offset, value)
            name = f"{name}={value}"
        out = _recrc(bytes(buf)) if kind == "field-crc" else bytes(buf)
        return Mutation(kind, out, name)
    good, donor = Container.from_bytes(data), Container.from_bytes(other)
    layers = list(good.layers)
    if kind == "swap" and len(layers) == 2:
        layers = [
            Layer("machine", layers[0].quality, layers[1].payload),
            Layer("human", layers[1].quality, layers[0].payload),
        ]
        detail = "payloads of the two layers exchanged"
    else:
        i = int(rng.integers(0, min(len(layers), len(donor.layers))))
        layers[i] = Layer(layers[i].kind, layers[i].quality, donor.layers[i].payload)
        detail = f"{layers[i].kind} payload from another picture"
        kind = "splice"
    out = Container(good.width, good.height, good.model_name, good.model_hash, good.m, layers)
    return Mutation(kind, out.to_bytes(), detail)


def judge(
    codec: Codec,
    original: bytes,
    pictures: dict[str, np.ndarray],
    case: Mutation,
    donor_pictures: dict[str, np.ndarray] | None = None,
) -> dict:
    """Decode every layer of ``case``; the outcome per layer and the slowest time.

    ``pictures`` are the original's decoded layers, ``donor_pictures`` those of the file
    that splices take payloads from.
    """
    mutated = case.data
    good = Container.from_bytes(original)
    outcomes, slowest = {}, 0.0
    for layer in LAYER_KINDS:
        start = time.perf_counter()
        try:
            picture = np.asarray(codec.decode(mutated, layer))
        except FusionCodecError as exc:
            message = str(exc)
            outcomes[layer] = "BAD multi-line message" if "\n" in message else "error"
        except Exception as exc:  # noqa: BLE001 - anything else is what the harness looks for
            outcomes[layer] = f"BAD {type(exc).__name__}: {str(exc)[:120]}"
        else:
            outcomes[layer] = _picture_outcome(good, mutated, layer, picture, pictures)
            donor = (donor_pictures or {}).get(layer)
            if case.kind == "splice" and donor is not None and _equal(picture, donor):
                outcomes[layer] = "donor"
            if case.kind in ("truncate", "flip", "field") and mutated != original:
                outcomes[layer] = "BAD picture from a file whose CRCs do not match"
        seconds = time.perf_counter() - start
        slowest = max(slowest, seconds)
        if seconds > TIME_LIMIT:
            outcomes[layer] = f"BAD slow ({seconds:.1f} s)"
    return {"outcomes": outcomes, "seconds": slowest}


def _picture_outcome(
    good: Container, mutated: bytes, layer: str, picture: np.ndarray, pictures: dict
) -> str:
    container = Container.from_bytes(mutated)  # it decoded, so it parses
    needed = LAYER_KINDS[: LAYER_KINDS.index(layer) + 1]
    same_payloads = all(
        container.layer(k).payload == good.layer(k).payload for k in needed if k in good.kinds
    )
    if not same_payloads:
        return "BAD picture from a changed payload"
    return "same" if _equal(picture, pictures[layer]) else "edited"


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)
