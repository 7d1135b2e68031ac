"""Evaluation: codecs coded for real, rate-distortion sweeps, detector mAP and benchmarks."""


class EvalError(ValueError):
    """A bad argument or input of an evaluation, said in one line."""
