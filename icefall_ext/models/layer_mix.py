"""A learnt weighted sum of all of an encoder's hidden states, as the input of the heads (SUPERB, Yang et al. 2021).

On a frozen pre-trained encoder the last block is the one most shaped by the pre-training task (reconstruction,
contrast, translation); the blocks below it often keep more of what another task needs. The mix lets the task's
head choose::

    out = sum_i softmax(w)_i * LayerNorm(h_i)      h_0: the input of the first block, h_i: the output of block i

(LayerNorm without parameters, so the weights compare states of equal scale; ``w`` starts at zero: the mean.)

The mix is a sibling of the encoder (``AsrModel.layer_mix``, parameters ``layer_mix.*``), so ``--freeze-encoder``
leaves it trainable, and the encoder's code and state dict are untouched: :meth:`LayerMix.run` hooks the encoder's
blocks (found as per-language adapters find them, :func:`~icefall_ext.models.adapters.adapter_block_groups`) for
one call. The blocks must share one width (the Conformer; not the Zipformer's stacks). Streaming forwards bypass
the blocks' hooks: streaming decoding and ONNX export of such a model are refused.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icefall_ext.models.adapters import adapter_block_groups


def _hidden(output: object) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


class LayerMix(nn.Module):
    """Softmax-weighted sum of the (normalised) input of an encoder's first block and the outputs of all its blocks."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        groups = adapter_block_groups(encoder)
        widths = {width for _, width in groups}
        if len(widths) != 1:
            raise ValueError(f"a layer mix needs blocks of one width; {type(encoder).__name__} has {sorted(widths)}")
        self.width = widths.pop()
        self.num_states = 1 + sum(len(blocks) for blocks, _ in groups)
        self.weights = nn.Parameter(torch.zeros(self.num_states))

    def mixture(self) -> Tensor:
        """(num_states,) the current weights of the states (they sum to one)."""
        return self.weights.softmax(dim=0)

    def run(self, encoder: nn.Module, call: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """Run ``call()`` (which calls ``encoder`` once and returns its (out (N, T, D), lens (N,))) and return the
        mix of its hidden states instead of ``out``, with ``lens``."""
        blocks = [block for group, _ in adapter_block_groups(encoder) for block in group]
        states: list[Tensor] = []

        def keep_input(_module: nn.Module, args: tuple) -> None:
            states.append(args[0])

        def keep_output(_module: nn.Module, _args: tuple, output: object) -> None:
            states.append(_hidden(output))

        handles = [blocks[0].register_forward_pre_hook(keep_input)]
        handles += [block.register_forward_hook(keep_output) for block in blocks]
        try:
            out, lens = call()
        finally:
            for handle in handles:
                handle.remove()
        if len(states) != self.num_states:
            raise RuntimeError(f"the layer mix saw {len(states)} hidden states, expected {self.num_states} "
                               f"(was the encoder called exactly once, through its blocks?)")
        weights = self.mixture().to(out.dtype)
        mixed = sum(w * F.layer_norm(h, (self.width,)) for w, h in zip(weights, states))
        return mixed, lens
