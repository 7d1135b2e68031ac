"""Building blocks shared by every network: strided convolutions, GDN and gain units."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fusioncodec._torchvision import ensure_torchvision

ensure_torchvision()
from compressai.layers import GDN  # noqa: E402


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    """A 'same'-padded convolution that downsamples by ``stride``."""
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """A transposed convolution that upsamples by exactly ``stride``."""
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )


def analysis_transform(cin: int, n: int, m: int) -> nn.Sequential:
    """Image -> latent at 1/16 resolution (four stride-2 5x5 convolutions with GDN)."""
    return nn.Sequential(conv(cin, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))


def synthesis_transform(m: int, n: int, cout: int = 3) -> nn.Sequential:
    """Latent at 1/16 resolution -> image (mirror of :func:`analysis_transform`)."""
    return nn.Sequential(
        deconv(m, n),
        GDN(n, inverse=True),
        deconv(n, n),
        GDN(n, inverse=True),
        deconv(n, n),
        GDN(n, inverse=True),
        deconv(n, cout),
    )


class GainUnit(nn.Module):
    """Per-channel gain and inverse gain for continuous rate control (Cui et al., CVPR 2021).

    ``levels`` gain vectors are learned, one per training lambda. A continuous quality
    ``q`` in ``[0, levels - 1]`` interpolates the two neighbouring vectors geometrically.
    Gains are stored as logarithms so they stay positive.
    """

    def __init__(self, channels: int, levels: int, init_log_gain: Tensor | None = None) -> None:
        super().__init__()
        if init_log_gain is None:
            init_log_gain = torch.zeros(levels)
        base = init_log_gain.reshape(levels, 1).expand(levels, channels).clone()
        self.log_gain = nn.Parameter(base)
        self.log_inverse = nn.Parameter(-base.clone())

    @property
    def levels(self) -> int:
        return self.log_gain.shape[0]

    @staticmethod
    def _rows_at(table: Tensor, positions: Tensor) -> Tensor:
        """Rows of ``table`` at continuous ``positions``, linear between neighbouring rows
        (and along the end segments for positions outside the table)."""
        positions = positions.to(table)
        lo = positions.floor().clamp(0, table.shape[0] - 2).long()
        t = (positions - lo.to(positions))[:, None]
        return table[lo] * (1 - t) + table[lo + 1] * t

    def _interpolate(self, table: Tensor, q: Tensor) -> Tensor:
        q = q.to(table).clamp(0, self.levels - 1)
        return self._rows_at(table, q).exp()[:, :, None, None]

    @torch.no_grad()
    def resample(self, positions: Tensor) -> None:
        """Re-seat the learned levels at continuous ``positions`` of the current table.

        Positions outside ``[0, levels - 1]`` extrapolate the end segments linearly (in log
        gain). Used to warm-start a new lambda range from weights trained on another one.
        """
        for table in (self.log_gain, self.log_inverse):
            table.copy_(self._rows_at(table, positions))

    def gain(self, q: Tensor) -> Tensor:
        return self._interpolate(self.log_gain, q)

    def inverse(self, q: Tensor) -> Tensor:
        return self._interpolate(self.log_inverse, q)


def lambda_log_gains(lambdas: list[float]) -> Tensor:
    """Initial log-gains: quantiser step shrinking as sqrt(lambda) grows (MSE rule of thumb)."""
    mid = math.exp(sum(math.log(x) for x in lambdas) / len(lambdas))
    return torch.tensor([0.5 * math.log(x / mid) for x in lambdas])


def lambda_positions(trained: list[float], wanted: list[float]) -> Tensor:
    """Where each wanted lambda lies in a trained lambda table, as a continuous level index.

    Linear in log lambda between levels and beyond the ends (extrapolated), the same rule
    :class:`GainUnit` uses between levels.
    """
    logs = torch.tensor(trained, dtype=torch.float64).log()
    x = torch.tensor(wanted, dtype=torch.float64).log()
    i = torch.searchsorted(logs, x).clamp(1, len(trained) - 1)
    lo, hi = logs[i - 1], logs[i]
    return (i - 1 + (x - lo) / (hi - lo)).float()
