"""The speech-translation objective (``train --task st``): attention-decoder cross-entropy of the translation,
optional auxiliary CTC on the source transcript, and optional joint machine translation (mSLAM §4.1).

Joint ST + MT: each batch of N utterances is paired with N text pairs (source sentence, English translation) drawn
from the MT pool, which holds the training cuts' transcripts with their translations plus any ``--mt-text`` files
(``source<TAB>translation`` per line, e.g. WMT data); the MT loss is weighted by ``--mt-scale`` (mSLAM: 5.0). The
draw depends only on (seed, update, rank), so a resumed run draws what an uninterrupted one would.
Validation: loss, and BLEU / chrF (sacrebleu) of greedy translations of the validation set.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch

from ..data.dataset import AsrDataset, cut_text, cut_translation
from .objectives import Objective

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

logger = logging.getLogger(__name__)

Pair = Tuple[str, str]


def read_mt_text(paths: Sequence[str]) -> List[Pair]:
    """(source, translation) pairs of ``source<TAB>translation`` files; lines without both are skipped."""
    pairs = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            src, _, tgt = line.partition("\t")
            if src.strip() and tgt.strip():
                pairs.append((src.strip(), tgt.strip()))
    return pairs


def corpus_scores(hyps: List[str], refs: List[str]) -> Dict[str, float]:
    """sacrebleu's corpus BLEU (13a, case-sensitive) and chrF of detokenised hypotheses."""
    import sacrebleu

    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score}


class SpeechTranslationObjective(Objective):
    """Loss and validation of a :class:`~icefall_ext.models.st_model.SpeechTranslationModel`."""

    name = "st"
    target = "translation"

    def __init__(self, source_tokenizer=None, mt_pairs: Sequence[Pair] = (), mt_scale: float = 0.0,
                 seed: int = 42) -> None:
        self.source_tokenizer = source_tokenizer
        self.mt_pairs = list(mt_pairs)
        self.mt_scale = mt_scale
        self.seed = seed
        if mt_scale > 0 and not self.mt_pairs:
            raise ValueError("joint MT (mt_scale > 0) needs text pairs")

    @classmethod
    def from_cuts(cls, train_cuts, source_tokenizer, mt_scale: float, mt_text: Sequence[str],
                  seed: int) -> "SpeechTranslationObjective":
        """The MT pool = the training cuts' (transcript, translation) + the ``mt_text`` files."""
        pairs: List[Pair] = []
        if mt_scale > 0:
            extra = read_mt_text(mt_text)
            pairs = [(cut_text(c), cut_translation(c)) for c in train_cuts]
            pairs = [p for p in pairs if p[0] and p[1]] + extra
            logger.info("joint MT: %d text pairs (%d from --mt-text), weight %.2f", len(pairs), len(extra), mt_scale)
        return cls(source_tokenizer, pairs, mt_scale, seed)

    def source_ids(self, texts: Sequence[str]) -> Optional[List[List[int]]]:
        if self.source_tokenizer is None:
            return None
        return [self.source_tokenizer.encode(t, skip_unknown=True) for t in texts]

    def loss(self, trainer, model, batch, labels):
        feats = batch["features"].to(trainer.device)
        lens = batch["feature_lens"].to(trainer.device)
        targets = labels if labels is not None else batch["tokens"]
        core = getattr(model, "module", model)  # DDP wraps the model
        with trainer.autocast():
            out = model(feats, lens, targets, self.source_ids(batch["source_texts"]))
        n = float(feats.shape[0])
        loss = out["st"].float()
        parts = {"st": float(out["st"].detach()) / n}
        for key, scale in (("ctc", trainer.cfg.ctc_scale), ("target_ctc", trainer.cfg.target_ctc_scale)):
            if key in out and scale:  # the auxiliary CTCs: source transcript, translation tokens
                loss = loss + scale * out[key].float()
                parts[key] = float(out[key].detach()) / n
        if self.mt_scale > 0 and core.training:
            rng = random.Random(f"{self.seed}/{trainer.update}/{trainer.rank}")
            pairs = [rng.choice(self.mt_pairs) for _ in range(feats.shape[0])]
            with trainer.autocast():
                mt = core.mt_loss(self.source_ids([s for s, _ in pairs]),
                                  [trainer.tokenizer.encode(t) for _, t in pairs])
            loss = loss + self.mt_scale * mt.float()
            parts["mt"] = float(mt.detach()) / n
        parts["frames"] = float(lens.sum()) / core.encoder.subsampling_factor
        return loss, parts

    def validate(self, trainer):
        from ..decode.attention import greedy_search

        model = trainer.model
        dataset = AsrDataset(trainer.tokenizer, trainer.languages, target="translation")
        total, n, hyps, refs = 0.0, 0, [], []
        for batch in self.validation_batches(trainer, dataset):
            loss, _ = self.loss(trainer, model, batch, None)
            total += float(loss)
            n += len(batch["cut_ids"])
            enc, enc_lens = model.forward_encoder(batch["features"].to(trainer.device),
                                                  batch["feature_lens"].to(trainer.device))
            hyps += [trainer.tokenizer.decode(t) for t, _ in greedy_search(model.decoder, enc.float(), enc_lens)]
            refs += batch["texts"]
        return {"loss": total / max(1, n), **corpus_scores(hyps, refs)}

    def describe(self, result):
        return f"loss {result['loss']:.3f}, BLEU {result['bleu']:.2f}, chrF {result['chrf']:.2f} (greedy)"
