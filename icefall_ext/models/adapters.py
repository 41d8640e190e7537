"""Per-language residual adapters on the blocks of an encoder (USM, Zhang et al. 2023, §2.6).

After encoder block ``i`` every utterance goes through the adapter of its language::

    y = x + up(act(down(LayerNorm(x))))        down: D -> B, up: B -> D, act: ReLU or GELU

``up`` (weights and bias) starts at zero, so a fresh adapter is the identity and a model with new adapters
computes exactly what the model without them did.

Design:

* **Parameters** of all languages and blocks of one width are stacked in an :class:`AdapterBank`
  (language first: ``down`` is (L, K, D, B), ``up`` (L, K, B, D), ...). Routing a batch gathers each
  utterance's weights (N, D, B) and applies them with ``bmm``: one batched product per block, no loop over
  utterances. Language first also lets :func:`icefall_ext.train.init.transfer_weights` map adapters by
  language when a fine-tuning run's language table differs from its checkpoint's.
* **Attachment**: :class:`EncoderAdapters` registers forward hooks on the encoder's blocks (``encoder.layers``
  of the Conformer; ``encoder.stacks[j].layers`` of the Zipformer, one bank per stack since widths differ).
  The encoder's ``encoder(x, x_lens)`` signature, its state-dict keys and its ``parameters()`` are unchanged:
  the adapters are a sibling module (``AsrModel.adapters``), so freezing ``model.encoder`` leaves them
  trainable. The languages of the current batch are set around the encoder call with
  :meth:`EncoderAdapters.route` (``AsrModel.forward_encoder(x, x_lens, lang)`` does it).
* **Language ids** are indices into ``languages`` (the run's ``languages.txt``, the LID head's classes).
  ``-1`` is the explicit *no adapter* path: that utterance gets the encoder's own output. Calling an adapted
  encoder with no languages at all is an error (it would silently drop the adapters).
* **Export** (:func:`fold_language`): a copy of the model keeping one language's adapters, applied with a
  constant language, so the exported graph is an ordinary encoder (x, x_lens) -> (out, out_lens).

Encoders whose blocks are not reachable as ``.layers`` or ``.stacks[j].layers`` may define
``adapter_block_groups() -> [(ModuleList of blocks, width), ...]``; others are refused with a clear error.
A block's output is either its hidden state (N, T, D) or a tuple whose first element is (Zipformer).
Streaming forwards that bypass the blocks' ``__call__`` (the Conformer's ``streaming_forward``) skip the hooks:
streaming export and decoding of adapted models are refused.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("relu", "gelu")
DEFAULT_FRACTION = 0.02  # USM: 2.3% of the encoder per language

BlockGroup = Tuple[nn.ModuleList, int]


def adapter_block_groups(encoder: nn.Module) -> List[BlockGroup]:
    """The encoder's blocks as groups of equal width: ``[(blocks, width), ...]`` in forward order.

    Raises TypeError for an encoder that exposes no list of blocks.
    """
    custom = getattr(encoder, "adapter_block_groups", None)
    if callable(custom):
        return list(custom())
    stacks = getattr(encoder, "stacks", None)
    if isinstance(stacks, nn.ModuleList) and len(stacks) > 0 and all(
        isinstance(getattr(s, "layers", None), nn.ModuleList) and isinstance(getattr(s, "dim", None), int)
        for s in stacks
    ):
        return [(s.layers, s.dim) for s in stacks]  # Zipformer: one group per stack (widths differ)
    layers = getattr(encoder, "layers", None)
    width = getattr(encoder, "d_model", None) or getattr(encoder, "output_dim", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0 and isinstance(width, int):
        return [(layers, width)]
    raise TypeError(
        f"{type(encoder).__name__} exposes no list of blocks (a ModuleList `.layers` with `.output_dim`, "
        f"`.stacks[j].layers` with `.stacks[j].dim`, or `adapter_block_groups()`): per-language adapters "
        f"cannot attach to it"
    )


def adapter_params_per_language(widths: Sequence[int], bottleneck: int) -> int:
    """Parameters of one language's adapters on blocks of ``widths``: per block LayerNorm (2D),
    down (D B + B) and up (B D + D)."""
    return sum(bottleneck * (2 * d + 1) + 3 * d for d in widths)


def block_widths(encoder: nn.Module) -> List[int]:
    """The width of every block the adapters attach to, in forward order."""
    return [width for blocks, width in adapter_block_groups(encoder) for _ in blocks]


def bottleneck_for_fraction(encoder: nn.Module, fraction: float = DEFAULT_FRACTION) -> int:
    """The bottleneck B (>= 1) whose adapters of one language add closest to ``fraction`` of the encoder's
    parameters."""
    if not fraction > 0:
        raise ValueError(f"the adapter fraction must be positive, got {fraction}")
    widths = block_widths(encoder)
    target = fraction * sum(p.numel() for p in encoder.parameters())
    per_unit = sum(2 * d + 1 for d in widths)
    return max(1, round((target - 3 * sum(widths)) / per_unit))


class AdapterBank(nn.Module):
    """Adapters of ``num_languages`` languages for ``num_layers`` blocks of width ``dim``, stacked.

    Parameters (language first): ``norm_weight``, ``norm_bias`` (L, K, D); ``down`` (L, K, D, B),
    ``down_bias`` (L, K, B); ``up`` (L, K, B, D), ``up_bias`` (L, K, D), both zero at initialisation.
    """

    def __init__(self, num_languages: int, num_layers: int, dim: int, bottleneck: int,
                 activation: str = "relu") -> None:
        super().__init__()
        if num_languages < 1 or num_layers < 1 or dim < 1 or bottleneck < 1:
            raise ValueError(f"adapter bank needs positive sizes, got languages={num_languages}, "
                             f"layers={num_layers}, dim={dim}, bottleneck={bottleneck}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown adapter activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
        self.dim, self.bottleneck, self.activation = dim, bottleneck, activation
        shape = (num_languages, num_layers)
        self.norm_weight = nn.Parameter(torch.ones(*shape, dim))
        self.norm_bias = nn.Parameter(torch.zeros(*shape, dim))
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default scale
        self.down = nn.Parameter(torch.empty(*shape, dim, bottleneck).uniform_(-bound, bound))
        self.down_bias = nn.Parameter(torch.zeros(*shape, bottleneck))
        self.up = nn.Parameter(torch.zeros(*shape, bottleneck, dim))
        self.up_bias = nn.Parameter(torch.zeros(*shape, dim))

    @property
    def num_languages(self) -> int:
        return self.down.shape[0]

    @property
    def num_layers(self) -> int:
        return self.down.shape[1]

    def _act(self, h: Tensor) -> Tensor:
        return F.relu(h) if self.activation == "relu" else F.gelu(h)

    def forward(self, x: Tensor, layer: int, lang: Union[Tensor, int]) -> Tensor:
        """x (N, T, D) after block ``layer``; ``lang``: (N,) int64 language ids (-1: no adapter) or one int
        for the whole batch. Returns x plus the adapters' residual, in x's shape."""
        h = F.layer_norm(x, (self.dim,))
        if isinstance(lang, int):  # one language: plain products with constant weights (export)
            h = h * self.norm_weight[lang, layer] + self.norm_bias[lang, layer]
            h = self._act(torch.matmul(h, self.down[lang, layer].to(h.dtype)) + self.down_bias[lang, layer])
            delta = torch.matmul(h, self.up[lang, layer].to(h.dtype)) + self.up_bias[lang, layer]
            return x + delta.to(x.dtype)
        idx = lang.clamp(min=0)
        h = h * self.norm_weight[idx, layer].unsqueeze(1) + self.norm_bias[idx, layer].unsqueeze(1)
        h = torch.bmm(h, self.down[idx, layer].to(h.dtype)) + self.down_bias[idx, layer].unsqueeze(1)
        h = self._act(h)
        delta = torch.bmm(h, self.up[idx, layer].to(h.dtype)) + self.up_bias[idx, layer].unsqueeze(1)
        keep = (lang >= 0).to(delta.dtype).view(-1, 1, 1)  # -1: the "no adapter" path
        return x + (delta * keep).to(x.dtype)


class _AdapterHook:
    """Forward hook of one encoder block: applies adapter ``layer`` of bank ``group`` to the block's output.

    A plain object (not a closure) so that ``copy.deepcopy`` of a whole model rebinds it to the copied adapters
    and ``torch.save`` of a whole model can pickle it.
    """

    def __init__(self, adapters: "EncoderAdapters", group: int, layer: int) -> None:
        self.adapters, self.group, self.layer = adapters, group, layer

    def __call__(self, module: nn.Module, args, output):
        bank = self.adapters.banks[self.group]
        lang = self.adapters.current_languages()
        if isinstance(output, tuple):
            x = output[0]
            return (self._apply(bank, x, lang),) + tuple(output[1:])
        return self._apply(bank, output, lang)

    def _apply(self, bank: AdapterBank, x: Tensor, lang: Union[Tensor, int]) -> Tensor:
        if isinstance(lang, Tensor) and lang.shape[0] != x.shape[0]:
            raise ValueError(f"adapter routing got {lang.shape[0]} language ids for a batch of {x.shape[0]}")
        return bank(x, self.layer, lang)


class EncoderAdapters(nn.Module):
    """Per-language residual adapters hooked onto every block of ``encoder`` (see the module docstring).

    Args:
      encoder: the encoder to adapt (not registered as a submodule: its parameters stay its own).
      languages: language codes; adapter ids are indices into this list.
      bottleneck: B, the adapters' inner width.
      activation: "relu" or "gelu".
    """

    def __init__(self, encoder: nn.Module, languages: Sequence[str], bottleneck: int,
                 activation: str = "relu") -> None:
        super().__init__()
        languages = [str(lang) for lang in languages]
        if not languages or len(set(languages)) != len(languages):
            raise ValueError(f"adapters need a non-empty list of distinct languages, got {languages}")
        groups = adapter_block_groups(encoder)
        for blocks, _ in groups:
            if any(isinstance(h, _AdapterHook) for block in blocks for h in block._forward_hooks.values()):
                raise ValueError("this encoder already has adapters attached")
        self.languages = languages
        self.bottleneck = int(bottleneck)
        self.activation = activation
        self.banks = nn.ModuleList(
            AdapterBank(len(languages), len(blocks), width, self.bottleneck, activation) for blocks, width in groups
        )
        self.fixed_language: Optional[int] = None  # set by fold_language: one language, no routing needed
        self._lang: Optional[Tensor] = None
        for g, (blocks, _) in enumerate(groups):
            for i, block in enumerate(blocks):
                block.register_forward_hook(_AdapterHook(self, g, i))

    def config(self) -> dict:
        """The model-config entry that rebuilds these adapters (``build_model``'s ``"adapters"``)."""
        return {"languages": list(self.languages), "bottleneck": self.bottleneck, "activation": self.activation}

    def params_per_language(self) -> int:
        """Parameters that one language's adapters add."""
        return sum(p.numel() for p in self.parameters()) // len(self.languages)

    def language_ids(self, codes: Sequence[Optional[str]], device: Optional[torch.device] = None) -> Tensor:
        """(N,) int64 adapter ids of language ``codes``; -1 (no adapter) for codes without one."""
        where = {lang: i for i, lang in enumerate(self.languages)}
        return torch.tensor([where.get(c, -1) for c in codes], dtype=torch.int64, device=device)

    def check_languages(self, lang: Tensor) -> Tensor:
        """``lang`` as a (N,) int64 tensor after checking its ids (-1 .. L-1)."""
        if not isinstance(lang, Tensor) or lang.dim() != 1 or lang.dtype.is_floating_point:
            raise ValueError(f"adapter routing needs a (N,) integer tensor of language ids, got "
                             f"{type(lang).__name__} {tuple(getattr(lang, 'shape', ()))}")
        lang = lang.long()
        if lang.numel() and not torch.jit.is_tracing():
            low, high = int(lang.min()), int(lang.max())
            if low < -1 or high >= len(self.languages):
                raise ValueError(f"language id out of range [-1, {len(self.languages) - 1}] for adapters of "
                                 f"{', '.join(self.languages)}: got {low}..{high}")
        return lang

    @contextlib.contextmanager
    def route(self, lang: Optional[Tensor]) -> Iterator[None]:
        """Within this context the encoder's blocks apply the adapters of ``lang`` (N,) (ids into
        :attr:`languages`; -1: none). ``None`` is allowed only for a model folded to one language."""
        if lang is None:
            if self.fixed_language is None:
                raise ValueError(f"this model has per-language adapters ({', '.join(self.languages)}): pass each "
                                 f"utterance's language id (lang; -1 for none)")
            yield
            return
        previous, self._lang = self._lang, self.check_languages(lang)
        try:
            yield
        finally:
            self._lang = previous

    def current_languages(self) -> Union[Tensor, int]:
        """The routing in force (what the hooks use)."""
        if self._lang is not None:
            return self._lang
        if self.fixed_language is not None:
            return self.fixed_language
        raise RuntimeError(
            "the encoder has per-language adapters but no languages were given: call "
            "AsrModel.forward_encoder(x, x_lens, lang) or run the encoder inside adapters.route(lang)"
        )

    def keep_language(self, language: str) -> None:
        """Drop every language but ``language`` and apply it to every utterance (no routing input)."""
        if language not in self.languages:
            raise ValueError(f"no adapter for language {language!r}; this model has adapters for "
                             f"{', '.join(self.languages)}")
        i = self.languages.index(language)
        for bank in self.banks:
            for name, p in list(bank.named_parameters(recurse=False)):
                setattr(bank, name, nn.Parameter(p.detach()[i : i + 1].clone(), requires_grad=p.requires_grad))
        self.languages = [language]
        self.fixed_language = 0


def fold_language(model: nn.Module, language: str) -> nn.Module:
    """A copy of ``model`` (with ``.adapters``) whose encoder applies ``language``'s adapters to every
    utterance and needs no language input; the copy holds only that language's adapter weights."""
    if getattr(model, "adapters", None) is None:
        raise ValueError("this model has no per-language adapters")
    folded = copy.deepcopy(model)  # the hooks are rebound to the copy's adapters (see _AdapterHook)
    folded.adapters.keep_language(language)
    # constants of the exported graph (the export wrappers hold the encoder, not the sibling adapters)
    folded.adapters.requires_grad_(False)
    return folded
