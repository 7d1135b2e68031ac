"""Evaluation: metrics, rate-distortion sweeps and benchmarks."""
