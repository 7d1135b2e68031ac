"""Encode an image once, then decode what machines see and what people see.

python examples/api_roundtrip.py examples/street.png     # outputs in demo/
"""

import sys
from pathlib import Path

import fusioncodec

source = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/street.png")
out = Path("demo")
out.mkdir(exist_ok=True)
data = fusioncodec.encode(source, quality=4)  # both layers, default shipped weights
(out / f"{source.stem}.fcb").write_bytes(data)
container = fusioncodec.Container.from_bytes(data)
for kind in container.kinds:
    size = len(container.layer(kind).payload)
    print(
        f"{kind:8s} layer: {size} bytes, {8 * size / (container.width * container.height):.3f} bpp"
    )
fusioncodec.decode(data, layer="machine").save(out / f"{source.stem}-machine.png")
fusioncodec.decode(data, layer="human").save(out / f"{source.stem}-human.png")
