"""The options of ``fcodec train``, grouped by concern, and their check into a
``TrainConfig`` (torch and the training loop load only when a run starts)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from fusioncodec.cli.common import CliError, option_group, show
from fusioncodec.nets.config import CodecConfig
from fusioncodec.train import recipe
from fusioncodec.train.recipe import SOURCES, Balance
from fusioncodec.train.schedule import SCHEDULES

MIN_GOOD_CROP = 256


data_options = option_group(
    # Where the training pictures and their edge masks come from.
    click.option(
        "--data",
        "train_root",
        metavar="DIR",
        default=None,
        help="Training images (bsds500/, coco_*/). Default: $FUSIONCODEC_SHARED/data/train.",
    ),
    click.option(
        "--masks",
        "mask_dirs",
        multiple=True,
        metavar="DIR",
        help="Edge-mask folder from 'fcodec masks' (repeatable). Default: built-in sources.",
    ),
    click.option(
        "--sources",
        default=",".join(SOURCES),
        show_default=True,
        help="Built-in sources to train on, comma-separated (sun80: every 10th photo held out).",
    ),
    click.option(
        "--scale",
        metavar="LO:HI",
        default="0.5:0.9",
        show_default=True,
        help="Shrink each training picture by a random factor in this range (antialiased), so "
        "source JPEG artifacts fade; 1:1 trains on the pictures as they are.",
    ),
)


run_options = option_group(
    # How long and how large a run is, and how it survives its process.
    click.option("--init", metavar="PATH", help="Start from these weights (e.g. a machine codec)."),
    click.option(
        "--minutes", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True
    ),
    click.option("--steps", type=click.IntRange(min=1), default=1_000_000, show_default=True),
    click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True),
    click.option(
        "--crop",
        type=click.IntRange(min=64),
        default=MIN_GOOD_CROP,
        show_default=True,
        help=f"Multiple of 64; below {MIN_GOOD_CROP} the hyperprior sees only border positions.",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=0),
        default=0,
        help="torch threads (0: torch's default).",
    ),
    click.option(
        "--checkpoint-minutes",
        type=click.FloatRange(min=0, min_open=True),
        default=5.0,
        show_default=True,
        help="Minutes between checkpoints (also written when the run ends or is stopped).",
    ),
    click.option(
        "--seed",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Seed of the crops, flips, qualities and shrink factors (a resumed run keeps "
        "its own).",
    ),
)


recipe_options = option_group(
    # The training recipe: learning rate, quality balance, averaging, precision, rate.
    click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Peak learning rate [default: 2e-4; 1e-4 with --init].",
    ),
    click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default="cosine",
        show_default=True,
        help="cosine: lr decays smoothly to 1e-6 over the run (minutes or steps); step: lr drops "
        "10x at --decay-at.",
    ),
    click.option(
        "--decay-at",
        type=click.FloatRange(min=0, max=1),
        default=0.8,
        show_default=True,
        help="With --schedule step: fraction of the run after which the lr drops 10x.",
    ),
    click.option(
        "--balance",
        metavar="H[:M]|off",
        default=None,
        help="Quality balance: each crop's loss is weighted by lambda^-H (human layer, baseline) "
        "or lambda^-M (machine layer) and every quality level is drawn equally often; off: "
        f"unweighted, end levels drawn half as often [default: {Balance().human:g}:"
        f"{Balance().machine:g}].",
    ),
    click.option(
        "--ema",
        type=click.FloatRange(min=0, max=1, max_open=True),
        default=0.999,
        show_default=True,
        help="Keep a moving average of the weights with this decay (warming up over the first "
        "steps); validation and export use it. 0: none. Give it again when resuming.",
    ),
    click.option(
        "--decoders",
        default=",".join(recipe.DEFAULT_DECODERS),
        show_default=True,
        help="Decoder stage: what it trains, comma-separated: human (fusion and human "
        "synthesis), machine (the machine layer's synthesis).",
    ),
    click.option(
        "--precision",
        type=click.Choice(["auto", *recipe.PRECISIONS]),
        default="auto",
        show_default=True,
        help="bf16: the transforms under bf16 autocast (entropy models and losses in fp32); "
        "auto: bf16 on a CPU with avx512_bf16 or AMX, else fp32.",
    ),
    click.option(
        "--rounded-rate-from",
        type=click.FloatRange(min=0, max=1, max_open=True),
        default=None,
        metavar="FRACTION",
        help="From this fraction of the run on, charge the rate on rounded latents "
        "(straight-through) instead of noisy ones, as the coder codes them [default: never].",
    ),
)


model_options = option_group(
    # The architecture and lambda ranges of a new model.
    *(
        click.option(
            f"--{name}",
            name,
            type=click.IntRange(min=1),
            default=getattr(CodecConfig, name),
            show_default=True,
            help=text,
        )
        for name, text in (
            ("n", "Transform channels."),
            ("slices", "S, machine slices."),
            ("m", "m, human slices."),
        )
    ),  # fmt: skip
    click.option(
        "--machine-lambdas",
        metavar="LO:HI",
        help="Machine lambda range, geometric over the quality levels (default: the --init "
        "weights' range, else 0.0005:0.03).",
    ),
    click.option(
        "--human-lambdas",
        metavar="LO:HI",
        help="Human-layer / baseline lambda range (default: the --init weights' range, else "
        "0.0013:0.1).",
    ),
)


validation_options = option_group(
    # Pictures coded for real while training.
    click.option(
        "--val",
        "val_dir",
        metavar="DIR|held-out",
        help="Images coded for real during training; held-out: the sun80 photos never trained on.",
    ),
    click.option("--val-count", type=click.IntRange(min=1), default=4, show_default=True),
    click.option(
        "--validate-minutes",
        type=click.FloatRange(min=0),
        default=15.0,
        show_default=True,
        help="Minutes between validations (0: after every step).",
    ),
)


def train_config(stage: str, o: SimpleNamespace) -> Any:
    """The options of ``fcodec train`` checked and gathered into a ``TrainConfig``."""
    from fusioncodec.files import shared_dir
    from fusioncodec.train.loop import TrainConfig

    if o.crop % 64:
        raise CliError(f"--crop must be a multiple of 64 (the codec's stride), got {o.crop}")
    shared = shared_dir()
    root = Path(o.train_root) if o.train_root else shared / "data" / "train"
    if not root.is_dir():
        raise CliError(f"training data not found: {root}")
    val_images = _validation_images(o.val_dir, root, o.val_count)
    chosen = tuple(s.strip() for s in o.sources.split(",") if s.strip())
    if not chosen or set(chosen) - set(SOURCES):
        raise CliError(f"--sources takes some of {','.join(SOURCES)}, got {o.sources!r}")
    shrink = _scale_range(o.scale)
    weighting = _balance(o.balance)
    decoders = _decoders(stage, o)
    ranges = _lambda_ranges(o.machine_lambdas, o.human_lambdas, o.init)
    codec = CodecConfig(n=o.n, slices=o.slices, m=o.m, **ranges)
    if stage == "decoder":  # the --init weights' model, whole
        codec = CodecConfig.from_dict(_init_card(o.init, "scalable")["config"])
    return TrainConfig(
        stage=stage,
        out=Path(o.out_dir),
        train_root=root,
        shared=shared if shared.is_dir() else None,
        codec=codec,
        init=Path(o.init) if o.init else None,
        mask_dirs=[Path(d) for d in o.mask_dirs],
        sources=chosen,
        scale=shrink,
        device=o.device,
        val_images=val_images,
        validate_minutes=o.validate_minutes,
        batch=o.batch,
        crop=o.crop,
        lr=o.lr if o.lr is not None else (1e-4 if o.init else 2e-4),
        schedule=o.schedule,
        decay_at=o.decay_at,
        balance=weighting,
        ema=o.ema,
        precision=o.precision,
        decoders=decoders,
        rounded_rate_from=o.rounded_rate_from,
        max_steps=o.steps,
        max_minutes=o.minutes,
        threads=o.threads,
        checkpoint_minutes=o.checkpoint_minutes,
        seed=o.seed,
    )


def _decoders(stage: str, o: SimpleNamespace) -> tuple[str, ...]:
    """``--decoders`` checked; the decoder stage keeps its --init weights' encoders and
    lambdas, so that the bitstream does not change."""
    chosen = tuple(dict.fromkeys(d.strip() for d in o.decoders.split(",") if d.strip()))
    if not chosen or set(chosen) - set(recipe.DECODERS):
        raise CliError(f"--decoders takes some of {','.join(recipe.DECODERS)}, got {o.decoders!r}")
    if stage != "decoder":
        return chosen
    if not o.init:
        raise CliError("the decoder stage trains the decoders of trained weights: give --init")
    if o.machine_lambdas or o.human_lambdas or o.rounded_rate_from is not None:
        raise CliError(
            "the decoder stage keeps the --init weights' rates: no --machine-lambdas, "
            "--human-lambdas or --rounded-rate-from"
        )
    return chosen


def _init_card(init: str, kind: str) -> dict:
    """The card of the --init weights, which must hold a ``kind`` model."""
    from fusioncodec.weight_file import read_card

    card = read_card(Path(init))
    if card.get("kind") != kind:
        raise CliError(f"--init {show(init)} holds a {card.get('kind')} model, not {kind}")
    return card


def _validation_images(val_dir: str | None, root: Path, count: int) -> list[Path]:
    """``--val``: the first ``count`` images of a folder, or of the held-out sun80 photos."""
    if val_dir == "held-out":
        from fusioncodec.train.data import held_out_images

        images = held_out_images(root)[:count]
        if not images:
            raise CliError(f"no held-out photos: {show(root / 'sun80')} has no images")
        return images
    if not val_dir:
        return []
    from fusioncodec.files import TEST_SETS, image_files

    if any(part.lower() in TEST_SETS for part in Path(val_dir).resolve().parts):
        raise CliError(f"refusing to select models on a test set: {show(val_dir)}")
    images = image_files(Path(val_dir), recursive=True)[:count]
    if not images:
        raise CliError(f"no validation images in {show(val_dir)}")
    return images


def _lambda_ranges(
    machine_lambdas: str | None, human_lambdas: str | None, init: str | None
) -> dict[str, Any]:
    """The λ ranges given; one not given keeps the range the --init weights were trained with."""
    ranges: dict[str, Any] = {
        name: _lambda_range(text, option)
        for name, text, option in (
            ("machine_lambdas", machine_lambdas, "--machine-lambdas"),
            ("human_lambdas", human_lambdas, "--human-lambdas"),
        )
        if text is not None
    }
    if init:
        from fusioncodec.weight_file import read_card

        trained = read_card(Path(init))["config"]
        for name in ("machine_lambdas", "human_lambdas"):
            if name not in ranges and name in trained:
                ranges[name] = trained[name]
    return ranges


def _pair(text: str) -> list[float]:
    """``A:B``, or ``A`` for ``A:A``, as numbers (as given: [] or other lengths when bad)."""
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        return []
    return parts * 2 if len(parts) == 1 else parts


def _scale_range(text: str) -> tuple[float, float]:
    """``LO:HI`` (or one factor) -> the range training pictures are shrunk by."""
    parts = _pair(text)
    if len(parts) != 2 or not 0.1 <= parts[0] <= parts[1] <= 1:
        raise CliError(f"--scale takes LO:HI with 0.1 <= LO <= HI <= 1, got {text!r}")
    return parts[0], parts[1]


def _balance(text: str | None) -> Balance:
    """``--balance``: ``off``, ``H`` (both layers) or ``H:M``; None: the default."""
    if text is None:
        return Balance()
    if text == "off":
        return Balance.none()
    parts = _pair(text)
    if len(parts) != 2 or not all(0 <= v <= 2 for v in parts):
        raise CliError(f"--balance takes H[:M] (exponents in [0, 2]) or off, got {text!r}")
    return Balance(parts[0], parts[1])


def _lambda_range(text: str, option: str, levels: int = 8) -> list[float]:
    """``LO:HI`` -> ``levels`` lambdas spaced geometrically from LO to HI."""
    from fusioncodec.nets.config import geometric

    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise CliError(f"{option} takes LO:HI (two numbers), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise CliError(f"{option} needs 0 < LO < HI, got {text!r}")
    return geometric(lo, hi, levels)
