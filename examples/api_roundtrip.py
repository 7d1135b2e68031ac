"""Encode an image once, then decode what machines see and what people see.

python examples/api_roundtrip.py ../shared/data/kodak/kodim23.png
"""

import sys
from pathlib import Path

import fusioncodec

source = Path(sys.argv[1])
data = fusioncodec.encode(source, quality=4)  # both layers, default shipped weights
Path(source.stem + ".fcb").write_bytes(data)
container = fusioncodec.Container.from_bytes(data)
for kind in container.kinds:
    size = len(container.layer(kind).payload)
    print(
        f"{kind:8s} layer: {size} bytes, {8 * size / (container.width * container.height):.3f} bpp"
    )
fusioncodec.decode(data, layer="machine").save(source.stem + "-machine.png")
fusioncodec.decode(data, layer="human").save(source.stem + "-human.png")
