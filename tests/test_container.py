"""Tests for the .fcb container (fusioncodec.container); pure Python, no torch."""

from __future__ import annotations

import ast
import random
import struct
import time
import zlib
from pathlib import Path

import pytest

from fusioncodec import container as fc
from fusioncodec.container import (
    LAYER_KINDS,
    MAX_PIXELS,
    MAX_SIDE,
    Container,
    FormatError,
    Layer,
    peek_header,
)

HASH = bytes(range(16))


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def make(human: bool = True, name: str = "fusion-base", **kw: object) -> Container:
    layers = [Layer("machine", 0.3, b"machine-payload\x00\xff")]
    if human:
        layers.append(Layer("human", 2.7, b"human\x01\x02payload-bytes"))
    args = {"width": 768, "height": 512, "model_name": name, "model_hash": HASH, "m": 4}
    args["layers"] = tuple(layers)
    args.update(kw)
    return Container(**args)


def reheader(data: bytes, **fields: int) -> bytes:
    """Patch fixed header fields (by name) and recompute the header CRC."""
    offsets = {"version": (8, "<B"), "header_size": (9, "<H"), "width": (11, "<H")}
    offsets |= {"height": (13, "<H"), "m": (15, "<B"), "name_len": (32, "<B")}
    buf = bytearray(data)
    for key, value in fields.items():
        off, fmt = offsets[key]
        struct.pack_into(fmt, buf, off, value)
    return refresh_crc(bytes(buf))


def refresh_crc(data: bytes) -> bytes:
    """Recompute the header CRC at the position given by the header_size field."""
    (hs,) = struct.unpack_from("<H", data, 9)
    buf = bytearray(data)
    struct.pack_into("<I", buf, hs - 4, zlib.crc32(bytes(buf[: hs - 4])))
    return bytes(buf)


def table_offset(c: Container) -> int:
    return 34 + len(c.model_name.encode())


def test_public_layout_is_the_documented_one() -> None:
    """Tools patch headers through the public layout (fuzz.py does): it must be FORMAT.md's."""
    assert fc.FIXED_FIELDS == {
        "magic": (0, "<8s"),
        "version": (8, "<B"),
        "header_size": (9, "<H"),
        "width": (11, "<H"),
        "height": (13, "<H"),
        "m": (15, "<B"),
        "model_hash": (16, "<16s"),
        "name_len": (32, "<B"),
    }
    assert fc.LAYER_ENTRY_FIELDS == {
        "kind": (0, "<B"),
        "quality": (1, "<f"),
        "length": (5, "<I"),
        "crc32": (9, "<I"),
    }
    c = make()
    data, name_len = c.to_bytes(), len(c.model_name.encode())
    assert fc.layer_entry_offset(name_len, 1) == table_offset(c) + fc.LAYER_ENTRY_SIZE
    assert fc.LAYER_ENTRY_SIZE == 13
    for name, (at, fmt) in fc.FIXED_FIELDS.items():
        expected = {"magic": fc.MAGIC, "version": 2, "header_size": c.header_size}
        expected |= {"model_hash": HASH, "name_len": name_len}
        assert struct.unpack_from(fmt, data, at)[0] == expected.get(name, getattr(c, name, None))


def expect_error(data: bytes, match: str | None = None) -> FormatError:
    with pytest.raises(FormatError, match=match) as info:
        Container.from_bytes(data)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return info.value


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("human", [False, True])
def test_round_trip(human: bool) -> None:
    c = make(human=human)
    data = c.to_bytes()
    assert len(data) == c.header_size + sum(len(x.payload) for x in c.layers)
    d = Container.from_bytes(data)
    assert (d.width, d.height, d.model_name, d.model_hash, d.m) == (
        768,
        512,
        "fusion-base",
        HASH,
        4,
    )
    assert d.kinds == (("machine", "human") if human else ("machine",))
    for a, b in zip(c.layers, d.layers, strict=True):
        assert a.kind == b.kind and a.payload == b.payload
        assert b.quality == pytest.approx(a.quality, rel=1e-6)
        assert b.quality == f32(a.quality)
    # after one trip the value is float32-exact, so further trips are byte-identical
    assert d.to_bytes() == data
    assert Container.from_bytes(d.to_bytes()) == d


def test_header_is_compact() -> None:
    c = make()
    assert c.header_size == 38 + len("fusion-base") + 2 * 13 == 75
    assert make(human=False).header_size == 62
    assert c.to_bytes()[:8] == b"\x89FCB\r\n\x1a\n"


def test_round_trip_edge_values() -> None:
    c = Container(
        width=MAX_SIDE,
        height=MAX_PIXELS // MAX_SIDE,
        model_name="ü" * 127,  # 254 UTF-8 bytes
        model_hash=b"\xff" * 16,
        m=255,
        layers=(Layer("machine", -1e30, b""), Layer("human", 0, b"x" * 1000)),
    )
    d = Container.from_bytes(c.to_bytes())
    assert d.width == MAX_SIDE and d.height == MAX_PIXELS // MAX_SIDE
    assert d.model_name == c.model_name and d.m == 255
    assert d.layer("machine").payload == b"" and d.layer("human").payload == b"x" * 1000
    assert Container(1, 1, "", HASH, 0, [Layer("machine", 1.0, b"a")]).to_bytes()


def test_accepts_bytes_like() -> None:
    data = make().to_bytes()
    assert Container.from_bytes(bytearray(data)) == Container.from_bytes(memoryview(data))
    c = Container(8, 8, "x", bytearray(HASH), 1, [Layer("machine", 1.0, bytearray(b"ab"))])
    assert isinstance(c.model_hash, bytes) and isinstance(c.layers, tuple)
    assert isinstance(c.layers[0].payload, bytes)


def test_peek_header_needs_only_header() -> None:
    c = make()
    data = c.to_bytes()
    h = peek_header(data[: c.header_size])
    assert (h.width, h.height, h.m, h.model_name, h.model_hash) == (
        768,
        512,
        4,
        "fusion-base",
        HASH,
    )
    assert h.kinds == ("machine", "human")
    assert h.header_size == c.header_size and h.total_size == len(data)
    assert [i.length for i in h.layers] == [len(x.payload) for x in c.layers]
    assert h.layers[1].crc32 == zlib.crc32(c.layers[1].payload)
    with pytest.raises(FormatError, match="truncated"):
        peek_header(data[: c.header_size - 1])


def test_repr_does_not_dump_payload() -> None:
    c = make(layers=(Layer("machine", 1.0, b"z" * 100000),))
    assert len(repr(c)) < 300 and "100000 bytes" in repr(c)


# --- layer access and strip ----------------------------------------------------------------


def test_layer_access() -> None:
    c = make()
    assert c.layer("machine").payload == b"machine-payload\x00\xff"
    assert c.layer("human").kind == "human"
    with pytest.raises(FormatError, match="no human layer"):
        make(human=False).layer("human")
    with pytest.raises(ValueError, match="unknown layer kind"):
        c.layer("foo")
    assert LAYER_KINDS == ("machine", "human")


def test_without_human() -> None:
    c = make()
    s = c.without_human()
    assert s.kinds == ("machine",)
    assert s.layer("machine") == c.layer("machine")
    assert (s.width, s.height, s.model_name, s.model_hash, s.m) == (
        c.width,
        c.height,
        c.model_name,
        c.model_hash,
        c.m,
    )
    full, stripped = c.to_bytes(), s.to_bytes()
    mp = c.layer("machine").payload
    # machine payload bytes identical and at the same place right after the header
    assert full[c.header_size : c.header_size + len(mp)] == mp
    assert stripped[s.header_size :] == mp
    assert len(stripped) == len(full) - 13 - len(c.layer("human").payload)
    # machine table entry unchanged byte for byte
    t = table_offset(c)
    assert stripped[t : t + 13] == full[t : t + 13]
    p = Container.from_bytes(stripped)
    assert p == Container.from_bytes(full).without_human()
    assert p.layer("machine").payload == mp
    with pytest.raises(FormatError, match="no human layer"):
        p.layer("human")
    assert s.without_human() == s


def test_check_model() -> None:
    c = make()
    c.check_model(HASH)
    with pytest.raises(FormatError, match="encoded with model 'fusion-base'"):
        c.check_model(b"\x00" * 16, "other")


# --- malformed input -----------------------------------------------------------------------


def png_bytes() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"FCB",
        b"hello world, this is text" * 4,
        png_bytes(),
        b"\x89FCB\r\n\x1a\r" * 20,
    ],
)
def test_not_fcb(data: bytes) -> None:
    expect_error(data, "empty input|bad magic")


def test_random_bytes() -> None:
    rng = random.Random(1234)
    for n in list(range(64)) + [100, 1000]:
        for _ in range(5):
            expect_error(rng.randbytes(n))
    # random bytes behind a valid magic + version are also rejected
    for n in range(200):
        expect_error(b"\x89FCB\r\n\x1a\n\x01" + rng.randbytes(n))


def test_truncated_magic() -> None:
    expect_error(b"\x89FC", "truncated")


@pytest.mark.parametrize("human", [False, True])
def test_truncation_at_every_offset(human: bool) -> None:
    data = make(human=human).to_bytes()
    for k in range(len(data)):
        expect_error(data[:k], "truncated|empty input")


def test_truncation_message_has_sizes() -> None:
    data = make().to_bytes()
    expect_error(data[:-1], f"expected {len(data)} bytes, got {len(data) - 1}")


@pytest.mark.parametrize("human", [False, True])
def test_every_single_bit_flip(human: bool) -> None:
    c = make(human=human)
    data = c.to_bytes()
    for i in range(len(data)):
        for bit in range(8):
            buf = bytearray(data)
            buf[i] ^= 1 << bit
            err = expect_error(bytes(buf))
            if i >= c.header_size:
                assert "CRC mismatch in" in str(err) and "layer" in str(err)


def test_payload_crc_names_layer() -> None:
    c = make()
    data = bytearray(c.to_bytes())
    data[-1] ^= 0x10
    expect_error(bytes(data), "CRC mismatch in human layer: file is corrupted")
    data = bytearray(c.to_bytes())
    data[c.header_size] ^= 0x01
    expect_error(bytes(data), "CRC mismatch in machine layer: file is corrupted")


def test_header_crc() -> None:
    data = bytearray(make().to_bytes())
    data[20] ^= 0x04  # inside model_hash
    expect_error(bytes(data), "CRC mismatch in header")


@pytest.mark.parametrize("version", [0, 3, 7, 255])
def test_unsupported_version(version: int) -> None:
    data = reheader(make().to_bytes(), version=version)
    expect_error(data, rf"unsupported \.fcb version {version} \(this fusioncodec reads version 2\)")


def test_version_1_file_is_refused_with_what_to_do() -> None:
    """Files of fusioncodec 0.1 (float entropy parameters) name their version and the way out."""
    data = reheader(make().to_bytes(), version=1)
    expect_error(data, r"\.fcb version 1 file \(fusioncodec 0\.1.*re-encode the source image\)")


@pytest.mark.parametrize(
    ("w", "h"),
    [(0, 5), (5, 0), (0, 0), (MAX_SIDE + 1, 8), (8, 65535), (MAX_SIDE, MAX_SIDE)],
)
def test_implausible_dims(w: int, h: int) -> None:
    data = reheader(make().to_bytes(), width=w, height=h)
    expect_error(data, f"implausible image size {w}x{h} in header")


def test_huge_layer_length_fails_fast() -> None:
    c = make(human=False)
    buf = bytearray(c.to_bytes())
    struct.pack_into("<I", buf, table_offset(c) + 5, 0xFFFFFFFF)  # claim a 4 GB payload
    data = refresh_crc(bytes(buf))
    t0 = time.perf_counter()
    expect_error(data, f"truncated .fcb file: expected {c.header_size + 0xFFFFFFFF} bytes")
    assert time.perf_counter() - t0 < 0.5
    h = peek_header(data)  # header itself is consistent
    assert h.layers[0].length == 0xFFFFFFFF


def test_trailing_garbage() -> None:
    data = make().to_bytes()
    expect_error(data + b"\x00", "trailing garbage")
    expect_error(data + data, "trailing garbage")


@pytest.mark.parametrize("hs", [0, 10, 50, 320, 65535])
def test_implausible_header_size(hs: int) -> None:
    buf = bytearray(make().to_bytes())
    struct.pack_into("<H", buf, 9, hs)
    expect_error(bytes(buf), "header size|truncated")


def test_header_size_disagrees_with_contents() -> None:
    c = make()
    data = c.to_bytes()
    # header claims one byte more than the contents need (CRC kept valid)
    longer = data[: c.header_size - 4] + b"\x00" + data[c.header_size - 4 :]
    longer = reheader(longer, header_size=c.header_size + 1)
    expect_error(longer, "header size field says")


def test_name_len_overrun_and_bad_utf8() -> None:
    c = make()
    expect_error(reheader(c.to_bytes(), name_len=200), "model name length")
    buf = bytearray(c.to_bytes())
    buf[33] = 0xFF  # first byte of the model name
    expect_error(refresh_crc(bytes(buf)), "not valid UTF-8")


def _patch_table(c: Container, entry: int, field: int, fmt: str, value: object) -> bytes:
    buf = bytearray(c.to_bytes())
    struct.pack_into(fmt, buf, table_offset(c) + 13 * entry + field, value)
    return refresh_crc(bytes(buf))


@pytest.mark.parametrize(
    ("entry", "code", "match"),
    [(0, 2, "unknown layer kind code 2"), (0, 1, "first layer must be the machine"),
     (1, 0, "duplicate"), (1, 255, "unknown layer kind code")],
)  # fmt: skip
def test_bad_layer_kinds(entry: int, code: int, match: str) -> None:
    expect_error(_patch_table(make(), entry, 0, "<B", code), match)


@pytest.mark.parametrize("q", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_quality(q: float) -> None:
    expect_error(_patch_table(make(), 1, 1, "<f", q), "quality")


@pytest.mark.parametrize("n_layers", [0, 3, 255])
def test_bad_layer_count(n_layers: int) -> None:
    c = make()
    buf = bytearray(c.to_bytes())
    buf[table_offset(c) - 1] = n_layers
    expect_error(refresh_crc(bytes(buf)), "layers")


def test_wrong_input_type() -> None:
    with pytest.raises(TypeError):
        Container.from_bytes("not bytes")  # type: ignore[arg-type]


# --- construction-time validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"width": 0},
        {"height": 0},
        {"width": -3},
        {"width": MAX_SIDE + 1},
        {"width": MAX_SIDE, "height": MAX_SIDE},  # > MAX_PIXELS
        {"model_hash": b"\x00" * 15},
        {"model_hash": b"\x00" * 17},
        {"model_name": "x" * 256},
        {"model_name": "é" * 128},  # 256 UTF-8 bytes
        {"model_name": "\udcff"},  # not encodable
        {"m": -1},
        {"m": 256},
        {"layers": ()},
        {"layers": (Layer("human", 1.0, b"h"),)},
        {"layers": (Layer("human", 1.0, b"h"), Layer("machine", 1.0, b"m"))},
        {"layers": (Layer("machine", 1.0, b"m"), Layer("machine", 1.0, b"m"))},
        {
            "layers": (
                Layer("machine", 1.0, b"m"),
                Layer("human", 1.0, b"h"),
                Layer("human", 1, b""),
            )
        },
    ],
)
def test_construction_value_errors(kw: dict) -> None:
    with pytest.raises(ValueError):
        make(**kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"width": 1.5},
        {"width": True},
        {"model_name": b"bytes"},
        {"model_hash": "0" * 16},
        {"layers": ("machine",)},
        {"layers": b"x"},
    ],
)
def test_construction_type_errors(kw: dict) -> None:
    with pytest.raises(TypeError):
        make(**kw)


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (("Machine", 1.0, b""), ValueError),
        (("text", 1.0, b""), ValueError),
        (("machine", float("nan"), b""), ValueError),
        (("machine", float("inf"), b""), ValueError),
        (("machine", 1e39, b""), ValueError),  # not representable as float32
        (("machine", "1.0", b""), TypeError),
        (("machine", 1.0, "payload"), TypeError),
    ],
)
def test_layer_validation(args: tuple, exc: type) -> None:
    with pytest.raises(exc):
        Layer(*args)


def test_frozen() -> None:
    c = make()
    with pytest.raises(AttributeError):
        c.width = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.layers[0].payload = b""  # type: ignore[misc]


def test_format_error_is_value_error() -> None:
    assert issubclass(FormatError, ValueError)


def test_stdlib_only() -> None:
    """The container (and the errors it raises) must not import torch/numpy: it has to
    import in milliseconds."""
    import fusioncodec.errors

    allowed = {"__future__", "dataclasses", "hashlib", "itertools", "math", "struct", "zlib"}
    for module in (fc, fusioncodec.errors):
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed or name == "fusioncodec.errors", name
