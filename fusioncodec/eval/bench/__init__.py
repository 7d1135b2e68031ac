"""Speed, memory and rate benchmark of the scalable codec (``fcodec bench``).

What is measured, per device (CPU, and CUDA when torch sees one):

- **warm**: the model loaded once; median of ``repeat`` calls (after one untimed warm-up)
  of ``encode`` machine layer only, ``encode`` both layers, ``decode`` machine, ``decode``
  human, in seconds and megapixels per second (pixels of the unpadded image).  CUDA work is
  synchronised before each clock read.
- **cold**: a fresh interpreter running ``fcodec encode`` / ``fcodec decode`` (wall time
  including interpreter start-up, imports, model load, image reading and writing), and, once
  per run, ``fcodec --help`` and ``fcodec info`` (no torch).
- **memory**: see :func:`memory_method`.  Warm phases are measured in this process: on
  Linux the RSS high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs``
  before each phase and read after it, so every phase has its own peak; elsewhere the
  process peak so far (``ru_maxrss``) is reported instead.  Cold phases run in their own
  process, and their peak is that process's ``ru_maxrss`` (``os.wait4`` in a small launcher
  process, since a child forked straight from this one inherits its peak).  On CUDA,
  ``torch.cuda.max_memory_allocated`` is reset before each phase.
- **rate**: coded payload bits of each layer against the bits the entropy models estimate
  (eval-mode likelihoods of the rounded symbols), as an overhead in per cent, plus the
  header bytes of the ``.fcb`` file.
- **compressai**: CompressAI's ``mbt2018-mean`` (``MeanScaleHyperprior``, N=192, M=320: the
  quality 5-8 configuration) on the same padded image and device, and the ratio of
  fusioncodec's seconds to CompressAI's (above 1: fusioncodec is slower).  Pretrained
  weights cannot be downloaded here, so the network is randomly initialised (seeded) unless
  a state-dict file is given; random weights give a representative transform speed but not
  a representative entropy-coding speed or size.
- **train** (optional): training iterations per hour per stage at batch 8 x 256^2, each
  step as in :func:`fusioncodec.train.loop.train` (``step_losses`` and ``optimise`` of
  :mod:`fusioncodec.train.step`: backward, clipping, fused Adam) on random data.

A failing cold run (``fcodec encode`` exiting non-zero) fails the benchmark with the child's
error line: the CLI is broken and its numbers would be meaningless.

The entry point is :func:`run_bench`; :func:`format_report` renders its result as a table.
Expected failures raise :class:`BenchError` with a one-line message.
"""

from __future__ import annotations

from fusioncodec.eval.bench.cold import run_cold
from fusioncodec.eval.bench.options import (
    WARM_PHASES,
    BenchError,
    BenchOptions,
    default_image,
    parse_size,
    synthetic_image,
)
from fusioncodec.eval.bench.report import format_report, to_json
from fusioncodec.eval.bench.run import run_bench

__all__ = [
    "WARM_PHASES",
    "BenchError",
    "BenchOptions",
    "default_image",
    "format_report",
    "parse_size",
    "run_bench",
    "run_cold",
    "synthetic_image",
    "to_json",
]
