"""mSLAM-style joint speech-text pre-training (Bapna et al. 2022) of one shared encoder.

Three losses, each a mean over its own prediction units, weighted (mSLAM: 1.0 / 0.3 / 0.03) and summed:

* **speech**: BEST-RQ masked prediction on (unlabelled) speech, the :class:`~icefall_ext.pretrain.best_rq.BestRq`
  module unchanged (targets, masking, heads); mean cross-entropy per masked stacked group.
* **text**: span-masked character LM (SpanBERT-style with fixed-length spans). In each sentence of L characters,
  non-overlapping spans of ``span`` characters (mSLAM: 20; the mini default 5), separated by at least one unmasked
  character, cover ``mask_fraction`` of the characters in expectation (:func:`text_span_mask`); masked characters
  are replaced by the [MASK] id, the sentence goes through a
  :class:`~icefall_ext.models.st_model.TextFrontEnd` (embedding + positions + LayerNorm) into the *same* encoder
  blocks (``encoder.forward_layers``), and the loss is the mean cross-entropy of the original characters at the
  masked positions only (``text_loss="masked"``, mSLAM's). ``text_loss="all"`` scores every character of the
  sentence, masked or not: the unmasked positions must then name their own character through the layer that the
  paired CTC ties to speech, which puts text encodings where CTC puts speech encodings from the first updates
  (at mini scale the masked-only loss left unmasked positions naming their own character 47% of the time and
  zero-shot text translation at its floor; egs/covost2/RESULTS.md).
* **paired CTC**: CTC of paired speech against its character transcript, through the *same* ``nn.Linear`` as the
  text MLM (``source_ctc.output``; mSLAM ties them); mean per transcript character. By default on a second,
  unmasked encoder pass over the paired utterances; ``ctc_masked=True`` reuses the masked BEST-RQ pass instead
  (no extra compute, but a third of the frames are noise).

The character table is the ST recipe's source table (``tokens.txt``, ``<blk>`` = 0) plus [MASK] at id
``len(source_tokens)`` (the table's size): the output layer predicts the table's symbols (blank included, for CTC)
and never [MASK]; only the text front end's embedding has the extra row. Parameter names follow
:class:`~icefall_ext.models.st_model.SpeechTranslationModel` (``encoder``, ``text_frontend``, ``source_ctc``) so that
``train --task st --init-from`` copies all three (the embedding's rows mapped by symbol, [MASK] dropped).
"""

from __future__ import annotations

import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.heads import CtcHead, pad_labels
from ..models.st_model import TextFrontEnd
from .best_rq import BestRq


def _num_spans(length: int, span: int, fraction: float) -> Tuple[int, float, int]:
    """(effective span length, expected span count before capping, most non-adjacent spans that fit)."""
    s = min(span, length)
    return s, fraction * length / s, (length + 1) // (s + 1)


def text_span_mask(lengths: Sequence[int], span: int, fraction: float, rng: random.Random) -> Tensor:
    """(N, max(1, max L)) bool mask of each sentence's masked characters.

    Per sentence of L characters: span length s = min(span, L); the number of spans k is floor(f L / s) plus one
    with probability equal to its fractional part, so that E[k s] = f L, capped at the number of spans that fit
    with a gap of one unmasked character between them; the k spans are placed uniformly among all such placements
    (k distinct draws c_0 < ... < c_{k-1} from range(L - k s + 1); span i starts at c_i + i s). Every span is exactly
    s long; only sentences shorter than ``span`` get shorter (whole-sentence) spans.
    """
    if span < 1 or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"span must be >= 1 and fraction in [0, 1], got {span}, {fraction}")
    mask = torch.zeros(len(lengths), max([1] + list(lengths)), dtype=torch.bool)
    for i, length in enumerate(lengths):
        if length <= 0:
            continue
        s, want, cap = _num_spans(length, span, fraction)
        k = int(math.floor(want))
        k = min(cap, k + (rng.random() < want - k))
        for j, c in enumerate(sorted(rng.sample(range(length - k * s + 1), k))):
            mask[i, c + j * s: c + j * s + s] = True
    return mask


def expected_text_masked_fraction(length: int, span: int, fraction: float) -> float:
    """E[masked characters] / L of :func:`text_span_mask` for a sentence of ``length`` characters (``fraction``
    unless the cap on non-adjacent spans binds, which needs f > ~s/(s+1))."""
    s, want, cap = _num_spans(length, span, fraction)
    k = math.floor(want)
    expected_k = min(cap, k) * (1 - (want - k)) + min(cap, k + 1) * (want - k)
    return expected_k * s / length


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Summed cross-entropy of ``targets`` (N, U) under ``logits`` (N, U, V) at the positions of ``mask`` only,
    the number of those positions and how many are predicted right (argmax)."""
    chosen = logits[mask].float()
    y = targets[mask]
    if y.numel() == 0:
        zero = logits.sum() * 0.0
        return zero, torch.zeros((), device=logits.device), torch.zeros((), device=logits.device)
    return (F.cross_entropy(chosen, y, reduction="sum"), torch.tensor(float(y.numel()), device=logits.device),
            (chosen.argmax(-1) == y).sum().float().detach())


class MslamModel(nn.Module):
    """Encoder + BEST-RQ + text front end + the tied character output layer (see the module docstring).

    ``forward`` takes a speech batch, optionally a text batch (character ids, unmasked) and the paired transcripts
    of the speech batch; it returns the weighted ``"loss"`` (a mean: the objective scales it by the utterances) and
    each part on its own (``speech``, ``text``, ``ctc``: means) with counts and accuracies.
    """

    def __init__(self, encoder: nn.Module, best_rq: BestRq, source_tokens: Sequence[str], *, span: int = 5,
                 mask_fraction: float = 0.15, speech_scale: float = 1.0, text_scale: float = 0.3,
                 ctc_scale: float = 0.03, use_ctc: bool = True, ctc_masked: bool = False,
                 text_dropout: float = 0.1, text_loss: str = "masked") -> None:
        super().__init__()
        if not hasattr(encoder, "forward_layers"):
            raise ValueError(f"{type(encoder).__name__} has no forward_layers: the text path needs the Conformer")
        if len(source_tokens) < 2 or source_tokens[0] != "<blk>":
            raise ValueError("source_tokens must be a token table with <blk> at id 0")
        if span < 1 or not 0.0 < mask_fraction < 1.0:
            raise ValueError(f"span must be >= 1 and mask_fraction in (0, 1), got {span}, {mask_fraction}")
        if text_loss not in ("masked", "all"):
            raise ValueError(f"text_loss must be 'masked' or 'all', got {text_loss!r}")
        self.encoder = encoder
        self.best_rq = best_rq
        self.source_tokens = list(source_tokens)
        self.mask_id = len(self.source_tokens)  # one past the table: blank (0) stays the CTC blank
        self.span, self.mask_fraction = span, mask_fraction
        self.speech_scale, self.text_scale, self.ctc_scale = speech_scale, text_scale, ctc_scale
        self.use_ctc, self.ctc_masked, self.text_loss = use_ctc, ctc_masked, text_loss
        self.text_frontend = TextFrontEnd(self.mask_id + 1, encoder.output_dim, text_dropout)
        self.source_ctc = CtcHead(encoder.output_dim, len(self.source_tokens))

    @property
    def output_layer(self) -> nn.Linear:
        """The character classifier shared by the text MLM and the paired CTC."""
        return self.source_ctc.output

    def text_mlm(self, text: List[List[int]], rng) -> Dict[str, Tensor]:
        """Span-masked character LM on unmasked id sequences (each non-empty): summed loss, counts, accuracy, over
        the masked characters (``text_loss="masked"``) or over every character (``"all"``)."""
        device = next(self.parameters()).device
        ids, lens = pad_labels(text, padding_value=0, device=device)
        mask = text_span_mask(lens.tolist(), self.span, self.mask_fraction, rng).to(device)
        enc, _ = self.encoder.forward_layers(self.text_frontend(ids.masked_fill(mask, self.mask_id)), lens)
        scored = mask if self.text_loss == "masked" else torch.arange(ids.shape[1], device=device) < lens[:, None]
        total, count, correct = masked_cross_entropy(self.output_layer(enc), ids, scored)
        return {"sum": total, "count": count, "correct": correct,
                "masked_fraction": mask.sum().float() / lens.sum().clamp(min=1)}

    def forward(self, x: Tensor, x_lens: Tensor, text: Optional[List[List[int]]] = None,
                paired: Optional[List[List[int]]] = None, rng=None,
                generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Speech features (N, T, F) and lengths; ``text``: character-id sentences for the MLM (None: no text
        loss); ``paired``: the transcript ids of each utterance (empty: unpaired; None or ``use_ctc`` false: no
        CTC). ``rng`` (a :class:`random.Random`) draws the text masks, ``generator`` the speech masks."""
        rng = rng if rng is not None else random
        captured: Dict[str, Tuple[Tensor, Tensor]] = {}

        def encode(inputs: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
            captured["masked"] = self.encoder(inputs, lens)
            return captured["masked"]

        speech = self.best_rq(encode, x, x_lens, generator)
        masked = speech["num_masked"]
        accs = [v for k, v in speech.items() if k.startswith("acc_")]
        out: Dict[str, Tensor] = {"speech": speech["bestrq"] / masked.clamp(min=1), "speech_count": masked,
                                  "speech_acc": torch.stack(accs).mean(), "masked_fraction": speech["masked_fraction"]}
        loss = self.speech_scale * out["speech"]
        text = [t for t in (text or []) if t]
        if text:
            mlm = self.text_mlm(text, rng)
            out.update(text=mlm["sum"] / mlm["count"].clamp(min=1), text_count=mlm["count"],
                       text_acc=mlm["correct"] / mlm["count"].clamp(min=1),
                       text_masked_fraction=mlm["masked_fraction"])
            loss = loss + self.text_scale * out["text"]
        keep = [i for i, t in enumerate(paired or []) if t] if self.use_ctc else []
        if keep:
            index = torch.tensor(keep, device=x.device)
            if self.ctc_masked:
                enc, enc_lens = captured["masked"]
                enc, enc_lens = enc[index], enc_lens[index]
            else:
                lens = x_lens[index]
                enc, enc_lens = self.encoder(x[index, : int(lens.max())], lens)
            targets = [paired[i] for i in keep]
            chars = float(sum(len(t) for t in targets))
            out["ctc"] = self.source_ctc.loss(enc, enc_lens, targets) / chars
            out["ctc_count"] = torch.tensor(chars, device=x.device)
            loss = loss + self.ctc_scale * out["ctc"]
        out["loss"] = loss
        return out
