"""The mSLAM joint speech-text pre-training objective (``train --pretrain mslam``) of an
:class:`~icefall_ext.pretrain.mslam.MslamModel`.

Each training batch is a speech batch of N utterances from the trainer's sampler (every training cut counts as
unlabelled speech for BEST-RQ; a cut whose transcript has characters of the table is also *paired* data for the CTC
loss: no separate paired set) plus N text sentences drawn with ``Random(f"{seed}/{update}/{rank}")`` from the
``--mslam-text`` files (one sentence per line, held in memory), so that a resumed run draws what an uninterrupted
one would; the same generator draws the text masks. Characters outside the model's table are dropped and sentences
are cut to ``max_text_chars``.

The model returns per-unit means; the loss handed to the trainer is N x the weighted sum of means, so that the
trainer's division by the utterances of all ranks gives the weighted means (speech 1.0, text 0.3, CTC 0.03 by
default). Logged: ``speech`` / ``text`` (mean CE per masked group / per scored character: the masked ones, or every
one with ``text_loss="all"``), ``ctc`` (per transcript character), both accuracies and masked fractions.

Validation (fixed masks, comparable between validations): speech masked loss and accuracy as BEST-RQ's, text
loss and accuracy (scored characters) on the validation cuts' transcripts, and the CTC loss per character (when
the model has the CTC loss).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from ..data.dataset import AsrDataset
from ..data.tokenizer import CharTokenizer
from .objectives import Objective

logger = logging.getLogger(__name__)

PARTS = ("speech", "text", "ctc", "speech_acc", "text_acc", "masked_fraction", "text_masked_fraction")


def read_text_lines(paths: Sequence[str]) -> List[str]:
    """The non-empty lines (stripped) of text files, one sentence per line."""
    lines: List[str] = []
    for path in paths:
        lines += [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


class MslamObjective(Objective):
    """Speech BEST-RQ + text span MLM + paired CTC (see the module docstring)."""

    name = "mslam"

    def __init__(self, sentences: Sequence[str] = (), seed: int = 42, max_text_chars: int = 512) -> None:
        self.sentences = list(sentences)
        self.seed = seed
        self.max_text_chars = max_text_chars
        self._tokenizer = None

    @classmethod
    def from_files(cls, paths: Sequence[str], source_tokens: Sequence[str], seed: int,
                   text_scale: float) -> "MslamObjective":
        """Sentences of ``paths``; logs how many characters the table lacks. Raises ValueError when the text loss
        is on (``text_scale`` > 0) without sentences."""
        sentences = read_text_lines(paths)
        if text_scale > 0 and not sentences:
            raise ValueError("the text loss (--mslam-text-scale > 0) needs sentences (--mslam-text FILE...)")
        table = CharTokenizer(source_tokens)
        total = sum(len(s) for s in sentences)
        unknown = sum(s.count(c) for s in sentences for c in table.unknown_chars(s))
        logger.info("mSLAM text: %d sentences (%d characters, %.2f%% outside the source table) from %s, weight %.2f",
                    len(sentences), total, 100.0 * unknown / max(1, total), ", ".join(map(str, paths)) or "-",
                    text_scale)
        return cls(sentences, seed)

    def tokenizer(self, core) -> CharTokenizer:
        if self._tokenizer is None or self._tokenizer.token_table != core.source_tokens:
            self._tokenizer = CharTokenizer(core.source_tokens)
        return self._tokenizer

    def encode(self, core, texts: Sequence[str]) -> List[List[int]]:
        """Character ids of ``texts`` in the model's table (unknown characters dropped, cut to max_text_chars)."""
        table = self.tokenizer(core)
        return [table.encode(t, skip_unknown=True)[: self.max_text_chars] for t in texts]

    def loss(self, trainer, model, batch, labels):
        feats = batch["features"].to(trainer.device)
        lens = batch["feature_lens"].to(trainer.device)
        core = getattr(model, "module", model)  # DDP wraps the model
        n = feats.shape[0]
        rng = random.Random(f"{self.seed}/{trainer.update}/{trainer.rank}")
        text = None
        if core.text_scale > 0 and self.sentences:
            text = self.encode(core, [rng.choice(self.sentences) for _ in range(n)])
        paired = self.encode(core, batch["source_texts"]) if core.use_ctc else None
        with trainer.autocast():
            out = model(feats, lens, text=text, paired=paired, rng=rng)
        parts = {k: float(out[k].detach()) if k in out else 0.0 for k in PARTS}
        parts["frames"] = float(lens.sum()) / core.encoder.subsampling_factor
        return out["loss"] * n, parts

    def validate(self, trainer):
        model = trainer.model
        dataset = AsrDataset(None, trainer.languages)
        generator, rng = torch.Generator().manual_seed(0), random.Random(0)
        sums: Dict[str, float] = {}
        batches = 0
        for batch in self.validation_batches(trainer, dataset):
            feats = batch["features"].to(trainer.device)
            lens = batch["feature_lens"].to(trainer.device)
            ids = self.encode(model, batch["source_texts"])
            with trainer.autocast():
                out = model(feats, lens, text=ids, paired=ids, rng=rng, generator=generator)
            for part in ("speech", "text", "ctc"):  # means -> sums over the set's units
                if part in out:
                    count = float(out[f"{part}_count"])
                    sums[part] = sums.get(part, 0.0) + float(out[part]) * count
                    sums[f"{part}_count"] = sums.get(f"{part}_count", 0.0) + count
                    if f"{part}_acc" in out:
                        sums[f"{part}_acc"] = sums.get(f"{part}_acc", 0.0) + float(out[f"{part}_acc"]) * count
            for key in ("masked_fraction", "text_masked_fraction"):
                sums[key] = sums.get(key, 0.0) + float(out.get(key, 0.0))
            batches += 1
        result: Dict = {}
        for part in ("speech", "text", "ctc"):
            count = sums.get(f"{part}_count", 0.0)
            if count:
                result[f"{part}_loss"] = sums[part] / count
                if f"{part}_acc" in sums:
                    result[f"{part}_acc"] = sums[f"{part}_acc"] / count
        for key in ("masked_fraction", "text_masked_fraction"):
            result[key] = sums.get(key, 0.0) / max(1, batches)
        result["loss"] = (model.speech_scale * result.get("speech_loss", 0.0)
                          + model.text_scale * result.get("text_loss", 0.0)
                          + (model.ctc_scale * result.get("ctc_loss", 0.0) if model.use_ctc else 0.0))
        return result

    def describe(self, result):
        text = (f"loss {result['loss']:.3f}; speech: loss {result.get('speech_loss', 0.0):.3f}, masked accuracy "
                f"{result.get('speech_acc', 0.0):.3f}, masked fraction {result['masked_fraction']:.3f}")
        if "text_loss" in result:
            text += (f"; text: loss {result['text_loss']:.3f}, accuracy {result['text_acc']:.3f} (scored "
                     f"characters), masked fraction {result['text_masked_fraction']:.3f}")
        if "ctc_loss" in result:
            text += f"; CTC {result['ctc_loss']:.3f} per character"
        return text
