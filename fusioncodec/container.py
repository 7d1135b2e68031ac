"""The ``.fcb`` container: one image coded in a machine layer and an optional human layer.

Pure standard library (no torch, no numpy) so that it imports in milliseconds and can be
used by tools that only inspect, verify or strip files. The byte layout is specified in
``docs/FORMAT.md``; this module is its reference implementation.

Reading is defensive: :meth:`Container.from_bytes` and :func:`peek_header` raise
:class:`FormatError` (one-line message for end users) for every malformed input, and never
allocate based on a size read from the file before checking it against the input length.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, replace
from itertools import accumulate

from fusioncodec.errors import FormatError

MAGIC = b"\x89FCB\r\n\x1a\n"
"""File signature (8 bytes, PNG style: non-ASCII first byte, CR-LF, Ctrl-Z, LF)."""
FORMAT_VERSION = 2
"""Version 2 (fusioncodec 0.2): same layout as version 1; payloads are coded with integer-exact
entropy parameters, so a file decodes identically on every device."""
_RETIRED_VERSIONS = {
    1: "fusioncodec 0.1, whose files decode only on the device and torch set-up that encoded "
    "them; decode it there with fusioncodec 0.1, or re-encode the source image"
}
LAYER_KINDS = ("machine", "human")
"""Layer kinds; the on-disk kind code is the index in this tuple."""
MAX_SIDE = 1 << 15
MAX_PIXELS = 1 << 28
HASH_SIZE = 16
MAX_NAME_BYTES = 255
MAX_LAYERS = len(LAYER_KINDS)
MAX_PAYLOAD = 0xFFFFFFFF


def _layout(spec: str) -> tuple[struct.Struct, dict[str, tuple[int, str]]]:
    """A little-endian record from ``"name:format ..."``: its struct and its fields."""
    fields = [field.split(":") for field in spec.split()]
    offsets = accumulate((struct.calcsize("<" + fmt) for _, fmt in fields), initial=0)
    layout = {name: (at, "<" + fmt) for (name, fmt), at in zip(fields, offsets, strict=False)}
    return struct.Struct("<" + "".join(fmt for _, fmt in fields)), layout


_FIXED, FIXED_FIELDS = _layout(
    "magic:8s version:B header_size:H width:H height:H m:B model_hash:16s name_len:B"
)
"""The header's fixed-offset fields, name -> (byte offset, struct format); the model name
follows, then the layer count (u8), the layer entries and the header CRC32."""
_LAYER_ENTRY, LAYER_ENTRY_FIELDS = _layout("kind:B quality:f length:I crc32:I")
"""A layer-table entry's fields, name -> (offset in the entry, struct format)."""
LAYER_ENTRY_SIZE = _LAYER_ENTRY.size
_PREFIX_SIZE = FIXED_FIELDS["width"][0]  # magic, version, header_size: locate and verify
_U8 = struct.Struct("<B")
_CRC = struct.Struct("<I")
_F32_MAX = 3.4028234663852886e38

MIN_HEADER_SIZE = _FIXED.size + 1 + _LAYER_ENTRY.size + _CRC.size
"""Smallest valid header: empty model name and one layer (51 bytes)."""
MAX_HEADER_SIZE = _FIXED.size + MAX_NAME_BYTES + 1 + MAX_LAYERS * _LAYER_ENTRY.size + _CRC.size
"""Largest valid header (319 bytes); reading this many bytes always suffices."""


def layer_entry_offset(name_len: int, index: int) -> int:
    """Where layer entry ``index`` starts in a header whose model name has ``name_len`` bytes."""
    return _FIXED.size + name_len + 1 + index * _LAYER_ENTRY.size


def header_size_for(name_len: int, n_layers: int) -> int:
    """Header size in bytes for a model name of ``name_len`` UTF-8 bytes and ``n_layers``."""
    return layer_entry_offset(name_len, n_layers) + _CRC.size


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _as_bytes(name: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def size_problem(width: int, height: int) -> str | None:
    """Why ``width`` x ``height`` is not an acceptable image size, or None if it is."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        return f"each side must be in [1, {MAX_SIDE}]"
    if width * height > MAX_PIXELS:
        return f"more than {MAX_PIXELS} pixels"
    return None


@dataclass(frozen=True)
class Layer:
    """One coded layer.

    ``quality`` is stored as float32 on disk, so after a round trip it equals
    ``struct.unpack("<f", struct.pack("<f", quality))[0]`` rather than the value passed in.
    """

    kind: str
    quality: float
    payload: bytes

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; expected one of {LAYER_KINDS}")
        q = self.quality
        if isinstance(q, bool) or not isinstance(q, (int, float)):
            raise TypeError(f"quality must be a float, got {type(q).__name__}")
        if not math.isfinite(q) or abs(q) > _F32_MAX:
            raise ValueError(f"quality must be a finite float32 value, got {q!r}")
        payload = _as_bytes("payload", self.payload)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"layer payload too large ({len(payload)} bytes, max {MAX_PAYLOAD})")
        object.__setattr__(self, "payload", payload)

    def __repr__(self) -> str:
        kind = f"kind={self.kind!r}, quality={self.quality!r}"
        return f"Layer({kind}, payload=<{len(self.payload)} bytes>)"


@dataclass(frozen=True)
class LayerInfo:
    """A layer-table entry as read from a header (payload not loaded)."""

    kind: str
    quality: float
    length: int
    crc32: int


@dataclass(frozen=True)
class Header:
    """Everything in an ``.fcb`` header; returned by :func:`peek_header`."""

    width: int
    height: int
    model_name: str
    model_hash: bytes
    m: int
    layers: tuple[LayerInfo, ...]
    header_size: int

    @property
    def kinds(self) -> tuple[str, ...]:
        """Kinds of the layers present, in file order."""
        return tuple(layer.kind for layer in self.layers)

    @property
    def total_size(self) -> int:
        """Size of the whole file: header plus all payloads."""
        return self.header_size + sum(layer.length for layer in self.layers)


@dataclass(frozen=True)
class Container:
    """One image coded in a machine layer (required) and an optional human layer.

    >>> c = Container(64, 48, "demo", bytes(16), 4, (Layer("machine", 2.0, b"\\0" * 8),))
    >>> Container.from_bytes(c.to_bytes()).kinds, len(c.to_bytes())
    (('machine',), 63)
    """

    width: int
    height: int
    model_name: str
    model_hash: bytes
    m: int
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        _check_int("width", self.width, 1, MAX_SIDE)
        _check_int("height", self.height, 1, MAX_SIDE)
        problem = size_problem(self.width, self.height)
        if problem:
            raise ValueError(f"image size {self.width}x{self.height} not allowed: {problem}")
        if not isinstance(self.model_name, str):
            raise TypeError(f"model_name must be a str, got {type(self.model_name).__name__}")
        try:
            name_len = len(self.model_name.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"model_name is not encodable as UTF-8: {exc.reason}") from None
        if name_len > MAX_NAME_BYTES:
            raise ValueError(f"model_name is {name_len} UTF-8 bytes, max {MAX_NAME_BYTES}")
        model_hash = _as_bytes("model_hash", self.model_hash)
        if len(model_hash) != HASH_SIZE:
            raise ValueError(f"model_hash must be exactly {HASH_SIZE} bytes, got {len(model_hash)}")
        object.__setattr__(self, "model_hash", model_hash)
        _check_int("m", self.m, 0, 255)
        if isinstance(self.layers, (str, bytes)):
            raise TypeError("layers must be a sequence of Layer")
        layers = tuple(self.layers)
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"layers must contain Layer objects, got {type(layer).__name__}")
        problem = _layer_order_problem(tuple(layer.kind for layer in layers))
        if problem:
            raise ValueError(problem)
        object.__setattr__(self, "layers", layers)

    def __repr__(self) -> str:
        return (
            f"Container(width={self.width}, height={self.height}, "
            f"model_name={self.model_name!r}, model_hash={self.model_hash.hex()}, "
            f"m={self.m}, layers={self.layers!r})"
        )

    @property
    def kinds(self) -> tuple[str, ...]:
        """Kinds of the layers present, in file order (``("machine",)`` or both)."""
        return tuple(layer.kind for layer in self.layers)

    @property
    def header_size(self) -> int:
        """Bytes :meth:`to_bytes` spends on the header (everything except payloads)."""
        return header_size_for(len(self.model_name.encode("utf-8")), len(self.layers))

    def layer(self, kind: str) -> Layer:
        """The layer of ``kind``; :class:`FormatError` if this file does not contain it."""
        if kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {kind!r}; expected one of {LAYER_KINDS}")
        for layer in self.layers:
            if layer.kind == kind:
                return layer
        raise FormatError(
            f"this file has no {kind} layer (it was encoded or stripped to machine layer only)"
        )

    def without_human(self) -> Container:
        """This container with the human layer dropped; machine payload bytes are untouched."""
        if "human" not in self.kinds:
            return self
        return replace(self, layers=(self.layer("machine"),))

    def check_model(
        self,
        model_hash: bytes,
        model_name: str | None = None,
        reads: frozenset[bytes] = frozenset(),
    ) -> None:
        """Raise :class:`FormatError` unless this file was encoded with the given weights, or
        with weights whose files (at the layer being decoded) they read (``reads``)."""
        if bytes(model_hash) != self.model_hash and self.model_hash not in reads:
            loaded = f"{model_name!r} " if model_name is not None else ""
            raise FormatError(
                f"this file was encoded with model {self.model_name!r} "
                f"(hash {self.model_hash.hex()}), but the loaded weights {loaded}"
                f"have hash {bytes(model_hash).hex()}; decode it with the matching model"
            )

    def to_bytes(self) -> bytes:
        """Serialize to the ``.fcb`` byte layout (docs/FORMAT.md)."""
        name = self.model_name.encode("utf-8")
        header_size = header_size_for(len(name), len(self.layers))
        fixed = (MAGIC, FORMAT_VERSION, header_size, self.width, self.height, self.m)
        parts = [_FIXED.pack(*fixed, self.model_hash, len(name)), name, _U8.pack(len(self.layers))]
        for layer in self.layers:
            kind, crc = LAYER_KINDS.index(layer.kind), zlib.crc32(layer.payload)
            parts.append(_LAYER_ENTRY.pack(kind, layer.quality, len(layer.payload), crc))
        header = b"".join(parts)
        header += _CRC.pack(zlib.crc32(header))
        assert len(header) == header_size
        return b"".join([header, *(layer.payload for layer in self.layers)])

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Container:
        """Parse and fully verify an ``.fcb`` file; :class:`FormatError` on any problem."""
        data = _as_bytes("data", data)
        header = _parse_header(data)
        total = header.total_size
        if len(data) < total:
            raise FormatError(f"truncated .fcb file: expected {total} bytes, got {len(data)}")
        layers = []
        offset = header.header_size
        for info in header.layers:
            payload = data[offset : offset + info.length]
            offset += info.length
            if zlib.crc32(payload) != info.crc32:
                raise FormatError(f"CRC mismatch in {info.kind} layer: file is corrupted")
            layers.append(Layer(info.kind, info.quality, payload))
        if len(data) > total:
            raise FormatError(
                f"trailing garbage after .fcb data: expected {total} bytes, got {len(data)}"
            )
        try:
            return cls(
                header.width, header.height, header.model_name, header.model_hash, header.m, layers
            )
        except ValueError as exc:  # pragma: no cover - _parse_header already checks all of it
            raise FormatError(f"invalid .fcb file: {exc}") from None


def peek_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse and verify only the header; ``data`` may be just a prefix of the file.

    Checks magic, version, header CRC, image size and layer table, but not the payloads.
    Reading :data:`MAX_HEADER_SIZE` bytes from the start of a file is always enough.
    """
    return _parse_header(_as_bytes("data", data))


def _layer_order_problem(kinds: tuple[str, ...]) -> str | None:
    if not kinds:
        return "a container needs at least the machine layer"
    if len(kinds) > MAX_LAYERS:
        return f"at most {MAX_LAYERS} layers allowed, got {len(kinds)}"
    if kinds[0] != "machine":
        return f"first layer must be the machine layer, got {kinds[0]!r}"
    if len(set(kinds)) != len(kinds):
        return f"duplicate layer kind in {kinds}"
    return None


def _truncated_prefix(n: int) -> FormatError:
    return FormatError(f"truncated .fcb file: expected at least {MIN_HEADER_SIZE} bytes, got {n}")


def _parse_header(data: bytes) -> Header:
    """Validate and decode the header in the order given in docs/FORMAT.md."""
    n = len(data)
    if n == 0:
        raise FormatError("empty input: not an .fcb file")
    # 1. magic
    if data[: len(MAGIC)] != MAGIC:
        if n < len(MAGIC) and MAGIC.startswith(data):
            raise _truncated_prefix(n)
        raise FormatError("not an .fcb file (bad magic)")
    # 2. version
    if n <= len(MAGIC):
        raise _truncated_prefix(n)
    version = data[len(MAGIC)]
    if version in _RETIRED_VERSIONS:
        raise FormatError(
            f"this is an .fcb version {version} file ({_RETIRED_VERSIONS[version]}); "
            f"this fusioncodec reads version {FORMAT_VERSION}"
        )
    if version != FORMAT_VERSION:
        raise FormatError(
            f"unsupported .fcb version {version} (this fusioncodec reads version {FORMAT_VERSION})"
        )
    # 3. header size and header CRC
    if n < _PREFIX_SIZE:
        raise _truncated_prefix(n)
    at, fmt = FIXED_FIELDS["header_size"]
    (header_size,) = struct.unpack_from(fmt, data, at)
    if not MIN_HEADER_SIZE <= header_size <= MAX_HEADER_SIZE:
        raise FormatError(f"corrupt .fcb header: implausible header size {header_size}")
    if n < header_size:
        raise FormatError(f"truncated .fcb file: expected at least {header_size} bytes, got {n}")
    crc_at = header_size - _CRC.size
    (stored_crc,) = _CRC.unpack_from(data, crc_at)
    if zlib.crc32(data[:crc_at]) != stored_crc:
        raise FormatError("CRC mismatch in header: file is corrupted")
    # 4. fields and dimensions (header_size >= MIN_HEADER_SIZE, so the fixed part is in range)
    _, _, _, width, height, m, model_hash, name_len = _FIXED.unpack_from(data, 0)
    problem = size_problem(width, height)
    if problem:
        raise FormatError(f"implausible image size {width}x{height} in header ({problem})")
    name_end = _FIXED.size + name_len
    if name_end + 1 + _LAYER_ENTRY.size > crc_at:
        raise FormatError(f"corrupt .fcb header: model name length {name_len} overruns header")
    try:
        model_name = data[_FIXED.size : name_end].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("corrupt .fcb header: model name is not valid UTF-8") from None
    # 5. layer table
    n_layers = data[name_end]
    if not 1 <= n_layers <= MAX_LAYERS:
        raise FormatError(f"corrupt .fcb header: {n_layers} layers (expected 1 to {MAX_LAYERS})")
    expected = header_size_for(name_len, n_layers)
    if expected != header_size:
        raise FormatError(
            f"corrupt .fcb header: header size field says {header_size} bytes, "
            f"contents need {expected}"
        )
    infos = []
    for i in range(n_layers):
        code, quality, length, crc = _LAYER_ENTRY.unpack_from(data, layer_entry_offset(name_len, i))
        if code >= len(LAYER_KINDS):
            raise FormatError(f"corrupt .fcb header: unknown layer kind code {code}")
        kind = LAYER_KINDS[code]
        if not math.isfinite(quality):
            raise FormatError(f"corrupt .fcb header: {kind} layer quality is {quality}")
        infos.append(LayerInfo(kind, quality, length, crc))
    problem = _layer_order_problem(tuple(info.kind for info in infos))
    if problem:
        raise FormatError(f"corrupt .fcb layer table: {problem}")
    return Header(width, height, model_name, model_hash, m, tuple(infos), header_size)
