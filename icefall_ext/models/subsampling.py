"""Convolutional front end that subsamples feature frames by 4, and length helpers.

The two stride-2 convolutions use no time padding, so output frame ``j`` sees exactly the
input frames ``4j .. 4j+6``: a valid output never depends on padding, and a streaming
caller that feeds windows of ``4 * c + pad_length`` frames shifted by ``4 * c`` gets the
same ``c`` frames per window that the whole-utterance forward computes.
"""

import torch
from torch import Tensor, nn


def make_pad_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean mask (N, max_len), True at frames at or beyond each sequence's length."""
    frames = torch.arange(max_len, device=lengths.device)
    return frames.unsqueeze(0) >= lengths.unsqueeze(1)


class Conv2dSubsampling(nn.Module):
    """Conv2d(3x3, stride 2) -> ReLU -> Conv2d(3x3, stride 2) -> ReLU -> Linear -> Dropout.

    Maps (N, T, F) features to (N, T', out_dim) with ``T' = ((T - 1) // 2 - 1) // 2``.
    """

    subsampling_factor = 4
    #: input frames a streaming window needs beyond ``4 * chunk`` (receptive field 7 - stride 4)
    pad_length = 3

    def __init__(self, in_features: int, out_dim: int, channels: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if in_features < 7:
            raise ValueError(f"need at least 7 feature bins, got {in_features}")
        self.in_features = in_features
        self.out_dim = out_dim
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        sub_features = ((in_features - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * sub_features, out_dim)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def output_lengths(x_lens: Tensor) -> Tensor:
        """Number of output frames for inputs of ``x_lens`` frames (never negative)."""
        return (((x_lens - 1) // 2 - 1) // 2).clamp(min=0)

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, T, F), x_lens: (N,) -> ((N, T', out_dim), (N,) output lengths)."""
        y = self.conv(x.unsqueeze(1))  # (N, C, T', F')
        n, c, t, f = y.shape
        y = self.out(y.transpose(1, 2).reshape(n, t, c * f))
        return self.dropout(y), self.output_lengths(x_lens)
