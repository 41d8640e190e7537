"""Encoder + heads (CTC, language ID, pruned transducer) and their training losses."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icefall_ext.models.heads import CtcHead, Decoder, Joiner, LidHead, pad_labels


class AsrModel(nn.Module):
    """An encoder (``encoder(x, x_lens) -> (out, out_lens)``, attribute ``output_dim``) with
    optional CTC (``ctc_head_layers``: Transformer layers inside the CTC head, see
    :class:`~icefall_ext.models.heads.CtcHead`), language-ID and stateless-transducer heads, and optional
    per-language residual adapters on the encoder's blocks (``adapters={"languages": [...], "bottleneck": B, "activation": "relu"}``, see
    :mod:`icefall_ext.models.adapters`; ``self.adapters`` is a sibling of ``self.encoder``, not inside it), and
    optionally (``layer_mix``) a learnt mix of all the encoder's hidden states as the heads' input
    (:mod:`icefall_ext.models.layer_mix`, ``self.layer_mix``, also a sibling).

    ``forward`` returns summed (reduction="sum") losses; the trainer weights and normalises them.
    """

    def __init__(
        self,
        encoder: nn.Module,
        vocab_size: int,
        *,
        use_ctc: bool = True,
        use_transducer: bool = False,
        num_languages: int = 0,
        decoder_dim: int = 512,
        joiner_dim: int = 512,
        context_size: int = 2,
        blank_id: int = 0,
        adapters: Optional[dict] = None,
        ctc_head_layers: int = 0,
        layer_mix: bool = False,
    ) -> None:
        super().__init__()
        if not (use_ctc or use_transducer or num_languages > 0):
            raise ValueError("the model needs at least one head (CTC, transducer or LID)")
        encoder_dim = encoder.output_dim
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.ctc = CtcHead(encoder_dim, vocab_size, num_layers=ctc_head_layers) if use_ctc else None
        self.lid = LidHead(encoder_dim, num_languages) if num_languages > 0 else None
        if use_transducer:
            self.decoder = Decoder(vocab_size, decoder_dim, blank_id=blank_id, context_size=context_size)
            self.joiner = Joiner(encoder_dim, decoder_dim, joiner_dim, vocab_size)
            self.simple_am_proj = nn.Linear(encoder_dim, vocab_size)
            self.simple_lm_proj = nn.Linear(decoder_dim, vocab_size)
        else:
            self.decoder = self.joiner = self.simple_am_proj = self.simple_lm_proj = None
        self.adapters = None
        if adapters:
            from icefall_ext.models.adapters import EncoderAdapters

            self.adapters = EncoderAdapters(encoder, **adapters)
        self.layer_mix = None
        if layer_mix:
            from icefall_ext.models.layer_mix import LayerMix

            self.layer_mix = LayerMix(encoder)

    def forward_encoder(self, x: Tensor, x_lens: Tensor, lang: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Features (N, T, F), lengths (N,) -> encoder output (N, T', D) and lengths (N,).

        ``lang`` (N,) int64: each utterance's language id (the LID head's indices), which routes it through
        that language's adapters (-1: no adapter). Ignored without adapters; required with them. With a layer mix
        the output is the mix of the encoder's hidden states."""
        if self.layer_mix is not None:
            return self.layer_mix.run(self.encoder, lambda: self._run_encoder(x, x_lens, lang))
        return self._run_encoder(x, x_lens, lang)

    def _run_encoder(self, x: Tensor, x_lens: Tensor, lang: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        if self.adapters is None:
            return self.encoder(x, x_lens)
        with self.adapters.route(lang.to(x.device) if isinstance(lang, Tensor) else lang):
            return self.encoder(x, x_lens)

    def ctc_log_probs(self, encoder_out: Tensor, encoder_out_lens: Optional[Tensor] = None) -> Tensor:
        """(N, T, D), (N,) -> (N, T, V) CTC log-probabilities (a CTC head with layers needs the lengths of a
        padded batch)."""
        if self.ctc is None:
            raise RuntimeError("this model has no CTC head")
        return self.ctc(encoder_out, encoder_out_lens)

    def lid_logits(self, encoder_out: Tensor, encoder_out_lens: Tensor) -> Tensor:
        """(N, T, D), (N,) -> (N, num_languages) language-ID logits."""
        if self.lid is None:
            raise RuntimeError("this model has no language-ID head")
        return self.lid(encoder_out, encoder_out_lens)

    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        y: list[list[int]],
        lang: Optional[Tensor] = None,
        *,
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.25,
        lid: bool = True,
        lid_weight: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        """Summed losses: "ctc", "lid" (when ``lang`` is given and the head exists; ids -1 are left out),
        "simple" and "pruned" (transducer), plus "num_frames" (sum of encoder lengths). ``lang`` also routes
        the utterances through their languages' adapters; ``lid_weight`` (num_languages,) weighs each utterance's
        language-ID loss by its language."""
        encoder_out, encoder_out_lens = self.forward_encoder(x, x_lens, lang)
        losses: dict[str, Tensor] = {}
        if self.ctc is not None:
            losses["ctc"] = self.ctc.loss(encoder_out, encoder_out_lens, y, blank=self.blank_id)
        if lid and self.lid is not None and lang is not None:  # lid=False: the head is left alone (its norm too)
            logits = self.lid_logits(encoder_out, encoder_out_lens)
            weight = lid_weight.to(logits.device) if lid_weight is not None else None
            losses["lid"] = F.cross_entropy(logits.float(), lang.to(logits.device), weight=weight, reduction="sum",
                                            ignore_index=-1)
        if self.decoder is not None:
            losses["simple"], losses["pruned"] = self._transducer_losses(
                encoder_out, encoder_out_lens, y, prune_range=prune_range, am_scale=am_scale, lm_scale=lm_scale
            )
        losses["num_frames"] = encoder_out_lens.sum().to(torch.float32)
        return losses

    def _transducer_losses(
        self,
        encoder_out: Tensor,
        encoder_out_lens: Tensor,
        y: list[list[int]],
        *,
        prune_range: int,
        am_scale: float,
        lm_scale: float,
    ) -> tuple[Tensor, Tensor]:
        """icefall-style pruned RNN-T: smoothed simple loss -> prune ranges -> pruned loss."""
        from icefall_ext.losses import do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss_pruned, rnnt_loss_smoothed

        device = encoder_out.device
        y_padded, y_lens = pad_labels(y, padding_value=self.blank_id, device=device)
        decoder_out = self.decoder(F.pad(y_padded, (1, 0), value=self.blank_id))  # (N, U + 1, decoder_dim)

        boundary = torch.zeros(len(y), 4, dtype=torch.int64, device=device)
        boundary[:, 2] = y_lens
        boundary[:, 3] = encoder_out_lens

        lm = self.simple_lm_proj(decoder_out)
        am = self.simple_am_proj(encoder_out)
        with torch.autocast(device_type=device.type, enabled=False):
            simple_loss, (px_grad, py_grad) = rnnt_loss_smoothed(
                lm=lm.float(),
                am=am.float(),
                symbols=y_padded,
                termination_symbol=self.blank_id,
                lm_only_scale=lm_scale,
                am_only_scale=am_scale,
                boundary=boundary,
                reduction="sum",
                return_grad=True,
            )
        ranges = get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=prune_range)
        am_pruned, lm_pruned = do_rnnt_pruning(
            am=self.joiner.encoder_proj(encoder_out), lm=self.joiner.decoder_proj(decoder_out), ranges=ranges
        )
        logits = self.joiner(am_pruned, lm_pruned, project_input=False)
        with torch.autocast(device_type=device.type, enabled=False):
            pruned_loss = rnnt_loss_pruned(
                logits=logits.float(),
                symbols=y_padded,
                ranges=ranges,
                termination_symbol=self.blank_id,
                boundary=boundary,
                reduction="sum",
            )
        return simple_loss, pruned_loss
