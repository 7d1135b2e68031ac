"""Launch one first-weights training stage in the background (how v1 was trained)."""

import sys
from pathlib import Path

from fusioncodec.train.loop import TrainConfig, train

stage, minutes, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
train(
    TrainConfig(
        stage=stage,
        out=Path(f"runs/{stage}"),
        train_root=Path("../shared/data/train"),
        shared=Path("../shared"),
        max_minutes=minutes,
        threads=threads,
        log_every=50,
    )
)
