"""Output heads on top of an encoder: CTC, language ID, and the stateless transducer
prediction network (``Decoder``) and ``Joiner`` (icefall-compatible names and attributes)."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icefall_ext.models.subsampling import make_pad_mask


class Decoder(nn.Module):
    """Stateless prediction network: embedding -> grouped Conv1d (4 channels a group) over the last
    ``context_size`` tokens -> ReLU. The blank embedding is fixed at zero."""

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int = 0, context_size: int = 2) -> None:
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        self.vocab_size = vocab_size
        self.decoder_dim = decoder_dim
        self.blank_id = blank_id
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, decoder_dim, padding_idx=blank_id)
        self.conv = (
            # grouped as icefall's stateless decoder (groups of 4 channels) when the dimension allows it
            nn.Conv1d(decoder_dim, decoder_dim, context_size,
                      groups=decoder_dim // 4 if decoder_dim % 4 == 0 else 1, bias=False)
            if context_size > 1
            else None
        )

    def forward(self, y: Tensor, need_pad: bool = True) -> Tensor:
        """y (N, U) int64 token ids.

        need_pad=True: left-pad with ``context_size - 1`` blanks and return (N, U, decoder_dim),
        output u depending on tokens ``y[:, u - context_size + 1 : u + 1]``.
        need_pad=False: y is exactly (N, context_size); returns (N, 1, decoder_dim).
        """
        if need_pad:
            y = F.pad(y, (self.context_size - 1, 0), value=self.blank_id)
        elif y.size(1) != self.context_size:
            raise ValueError(f"need_pad=False expects (N, {self.context_size}) tokens, got {tuple(y.shape)}")
        out = self.embedding(y)
        if self.conv is not None:
            out = self.conv(out.transpose(1, 2)).transpose(1, 2)
        return F.relu(out)


class Joiner(nn.Module):
    """logits = output_linear(tanh(encoder_proj(e) + decoder_proj(d)))."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder_out: Tensor, decoder_out: Tensor, project_input: bool = True) -> Tensor:
        """Broadcastable encoder/decoder outputs -> (..., vocab_size) logits.

        With ``project_input=False`` the inputs are already in the joiner dimension
        (e.g. pruned outputs of ``encoder_proj`` / ``decoder_proj``).
        """
        if project_input:
            encoder_out = self.encoder_proj(encoder_out)
            decoder_out = self.decoder_proj(decoder_out)
        return self.output_linear(torch.tanh(encoder_out + decoder_out))


class CtcHead(nn.Module):
    """Linear projection to the vocabulary followed by log-softmax; with ``num_layers`` > 0, a small trainable
    decoder first: that many pre-norm Transformer layers (encoder dimension, ``num_heads`` heads, key-padding mask
    from the lengths) and a LayerNorm (``layers.*``, ``norm.*``), e.g. on a frozen pre-trained encoder. Without
    layers the parameters are ``output.*`` alone, as in checkpoints written before the layers existed."""

    def __init__(self, encoder_dim: int, vocab_size: int, num_layers: int = 0, num_heads: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.layers = self.norm = None
        if num_layers:
            from icefall_ext.models.transformer import TransformerLayer

            self.layers = nn.ModuleList(TransformerLayer(encoder_dim, num_heads, dropout=dropout)
                                        for _ in range(num_layers))
            self.norm = nn.LayerNorm(encoder_dim)
        self.output = nn.Linear(encoder_dim, vocab_size)

    def forward(self, encoder_out: Tensor, encoder_out_lens: Optional[Tensor] = None) -> Tensor:
        """(N, T, D) and lengths (N,) -> (N, T, vocab_size) log-probabilities. The lengths matter only with
        layers (without them every frame counts as valid)."""
        if self.layers is not None:
            pad = make_pad_mask(encoder_out_lens, encoder_out.size(1)) if encoder_out_lens is not None else None
            for layer in self.layers:
                encoder_out = layer(encoder_out, pad)
            encoder_out = self.norm(encoder_out)
        return self.output(encoder_out).log_softmax(dim=-1)

    def loss(self, encoder_out: Tensor, encoder_out_lens: Tensor, y: list[list[int]], blank: int = 0) -> Tensor:
        """Summed CTC loss (float32; impossible alignments count as zero) of label lists ``y``."""
        log_probs = self(encoder_out, encoder_out_lens).float()
        device = log_probs.device
        targets = torch.tensor([token for seq in y for token in seq], dtype=torch.int64, device=device)
        target_lens = torch.tensor([len(seq) for seq in y], dtype=torch.int64, device=device)
        return F.ctc_loss(log_probs.transpose(0, 1), targets, encoder_out_lens, target_lens, blank=blank,
                          reduction="sum", zero_infinity=True)


def pad_labels(y: list[list[int]], padding_value: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Ragged label lists -> ((N, max(1, max U)) int64 padded, (N,) lengths)."""
    max_len = max([1] + [len(seq) for seq in y])
    padded = torch.full((len(y), max_len), padding_value, dtype=torch.int64)
    for i, seq in enumerate(y):
        padded[i, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
    lengths = torch.tensor([len(seq) for seq in y], dtype=torch.int64)
    return padded.to(device), lengths.to(device)


class LidHead(nn.Module):
    """Utterance-level language ID: mean over valid frames -> batch normalisation -> linear classifier.

    The batch normalisation (per dimension, over the utterances of a batch; running statistics at inference) is what
    lets a fresh head learn quickly: pooled encoder outputs share a large common part and differ between languages
    in a few poorly scaled directions. On frozen BEST-RQ features of mini FLEURS (11 languages, 200 steps of 11
    utterances) a bare linear layer reached 14% dev accuracy, the normalised one 36%. Checkpoints saved before the
    normalisation existed load with identity statistics (the old behaviour)."""

    def __init__(self, encoder_dim: int, num_languages: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(encoder_dim, momentum=momentum)
        self.output = nn.Linear(encoder_dim, num_languages)

    def forward(self, encoder_out: Tensor, encoder_out_lens: Tensor) -> Tensor:
        """(N, T, D), (N,) -> (N, num_languages) logits; padded frames are ignored."""
        valid = ~make_pad_mask(encoder_out_lens, encoder_out.size(1))
        summed = (encoder_out * valid.unsqueeze(-1).to(encoder_out.dtype)).sum(dim=1)
        counts = encoder_out_lens.clamp(min=1).unsqueeze(-1).to(encoder_out.dtype)
        pooled = summed / counts
        n = self.norm
        # a training batch of one utterance has no batch statistics: it is normalised with the running ones
        normed = F.batch_norm(pooled, n.running_mean, n.running_var, n.weight, n.bias,
                              training=self.training and pooled.size(0) > 1, momentum=n.momentum, eps=n.eps)
        return self.output(normed)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401 (torch hook)
        if prefix + "output.weight" in state_dict and prefix + "norm.weight" not in state_dict:
            dim = state_dict[prefix + "output.weight"].shape[1]  # a checkpoint from before the normalisation
            for key, value in (("weight", torch.ones(dim)), ("bias", torch.zeros(dim)),
                               ("running_mean", torch.zeros(dim)), ("running_var", torch.ones(dim) - self.norm.eps),
                               ("num_batches_tracked", torch.tensor(0))):
                state_dict[prefix + "norm." + key] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
