"""slimIPL as a batch source of the trainer (the mechanisms live in :mod:`icefall_ext.pseudo.slimipl`).

The cache holds *cut ids* plus pseudo-labels, not feature tensors: batches are re-collated from feature storage
when used, so a cache of 1000 batches costs kilobytes and is saved whole in every checkpoint (exact resume).
Pseudo-labels come from the current model in eval mode with greedy CTC (or transducer greedy) decoding and no LM;
during the cropping warm-up the audio is labelled in crops whose log-probs are stitched back together
(:mod:`icefall_ext.decode.chunked`), while training always uses the whole utterance.
"""

from __future__ import annotations

import logging
import random
from typing import Dict, List, Optional, Tuple

import torch
from lhotse import CutSet

from ..data.dataset import AsrDataset, make_sampler
from ..pseudo.slimipl import PseudoLabelCache, SlimIpl, SlimIplSchedule
from .trainer import EpochEnd, SamplerEpochs

logger = logging.getLogger(__name__)


def set_encoder_dropout(model: torch.nn.Module, p: float) -> int:
    """Set every dropout of ``model.encoder`` to ``p`` (the encoder's own ``set_dropout`` when it has one, e.g. the
    Zipformer's scheduled dropout; otherwise its ``nn.Dropout`` modules); returns how many were set."""
    encoder = model.encoder
    if hasattr(encoder, "set_dropout"):
        return encoder.set_dropout(p)
    modules = [m for m in encoder.modules() if isinstance(m, torch.nn.Dropout)]
    for m in modules:
        m.p = p
    return len(modules)


class CutIdStream(SamplerEpochs):
    """Endless batches of cut ids from a bucketing sampler, epoch after epoch, with resumable position."""

    def __iter__(self) -> "CutIdStream":
        return self

    def __next__(self) -> List[str]:
        for _ in range(2):
            batch = self.next_in_epoch()
            if batch is not None:
                return [c.id for c in batch]
        raise RuntimeError("the unlabelled sampler yields no batches (is --slimipl-unlabelled-max-duration too small?)")


class _LabelledBatches:
    """The trainer's labelled source as an endless iterator; epoch ends are counted for the trainer, which saves
    ``epoch-N.pt`` after the update in which one happened (slimIPL's schedule must not be interrupted)."""

    def __init__(self, source) -> None:
        self.source = source
        self.epochs_ended = 0

    def __iter__(self):
        return self

    def __next__(self) -> Dict:
        for _ in range(2):
            try:
                return self.source.next(0)[0]
            except EpochEnd:
                self.epochs_ended += 1
                continue
        raise RuntimeError("the labelled sampler yields no batches")


class SlimIplSource:
    """Trainer batch source: labelled batches and cached pseudo-labelled batches as slimIPL schedules them."""

    def __init__(self, trainer, labelled, unlabelled_cuts: CutSet) -> None:
        cfg = trainer.cfg
        self.trainer = trainer
        self.labelled = labelled
        self.unlabelled_cuts = unlabelled_cuts.to_eager()
        self._by_id = {c.id: c for c in self.unlabelled_cuts}
        self.dataset = AsrDataset(None, trainer.languages)
        sampler = make_sampler(self.unlabelled_cuts, cfg.slimipl_unlabelled_max_duration or cfg.max_duration,
                               shuffle=True, num_buckets=cfg.num_buckets, seed=cfg.seed + 1,
                               world_size=trainer.world_size, rank=trainer.rank,
                               # under DDP lhotse would otherwise pad ranks with renamed copies ("<id>_dup0")
                               drop_last=trainer.world_size > 1)
        self.ids = CutIdStream(sampler)
        gen = random.Random(cfg.seed + 2)
        cache = PseudoLabelCache(cfg.slimipl_cache_size, cfg.slimipl_replace_prob, gen)
        schedule = SlimIplSchedule(warmup_updates=cfg.slimipl_supervised_updates, lambda_=cfg.slimipl_lambda,
                                   crop_updates=cfg.slimipl_crop_updates)
        self._labelled_batches = _LabelledBatches(labelled)
        self._epochs_reported = 0
        self.slimipl = SlimIpl(schedule, cache, self.label, self._labelled_batches, self.ids,
                               random.Random(cfg.seed + 3))
        self.num_empty_labels = 0
        self._dropout_changed = False

    @property
    def epoch(self) -> int:
        return self.labelled.epoch

    def take_epoch_end(self) -> bool:
        """True once for each labelled epoch that ended while the last update was assembled."""
        if self._labelled_batches.epochs_ended > self._epochs_reported:
            self._epochs_reported += 1
            return True
        return False

    def collate(self, cut_ids: List[str]) -> Dict:
        return self.dataset[CutSet.from_cuts(self._by_id[i] for i in cut_ids)]

    @torch.no_grad()
    def label(self, cut_ids: List[str], crop: bool) -> List[List[int]]:
        """Greedy pseudo-labels of a batch from the current model (eval mode, no LM), in ``cut_ids`` order."""
        from ..decode.search import decode_encoder_output, encode_batch

        trainer = self.trainer
        model = trainer.model
        was_training = model.training
        model.eval()
        batch = self.collate(cut_ids)
        chunk = overlap = 0
        if crop:  # cropping warm-up (encoder-level crop-and-stitch: CTC and transducer alike): 10 s crops
            # overlapping by a quarter, at most 2 s
            chunk = int(round(trainer.cfg.slimipl_crop_seconds * 100))
            overlap = min(200, chunk // 4)
        enc, enc_lens = encode_batch(model, batch, trainer.device, chunk, overlap, trainer.amp_dtype)
        with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype, enabled=trainer.amp_dtype is not None):
            hyps = decode_encoder_output(model, enc, enc_lens, "auto")
        model.train(was_training)
        order = {cid: i for i, cid in enumerate(batch["cut_ids"])}
        labels = [hyps[order[cid]] for cid in cut_ids]
        self.num_empty_labels += sum(1 for h in labels if not h)
        return labels

    def _maybe_change_dropout(self, update: int) -> None:
        """From the first pseudo-labelling update on (resumed runs included), the encoder's dropout is
        ``--slimipl-dyn-dropout`` (as flashlight's slimIPL recipes switch 0.5/0.3 to 0.1)."""
        p = self.trainer.cfg.slimipl_dyn_dropout
        if p < 0 or self._dropout_changed or update < self.slimipl.schedule.warmup_updates:
            return
        changed = set_encoder_dropout(self.trainer.model, p)
        self._dropout_changed = True
        logger.info("slimIPL: update %d sets the encoder dropout to %g (%d modules)", update, p, changed)

    def next(self, update: int) -> Tuple[Dict, Optional[List[List[int]]], str]:
        """The batch for ``update``; an empty pseudo-label stays a valid (all-blank) CTC target."""
        self._maybe_change_dropout(update)
        item, labels, kind = self.slimipl.next_batch(update)
        if labels is None:  # a labelled batch, or nothing to train on while the cache fills (item None)
            return item, None, kind
        batch = self.collate(item)
        by_id = dict(zip(item, labels))
        return batch, [by_id[cid] for cid in batch["cut_ids"]], kind

    def state_dict(self) -> Dict:
        return {"labelled": self.labelled.state_dict(), "ids": self.ids.state_dict(),
                "slimipl": self.slimipl.state_dict(), "num_empty_labels": self.num_empty_labels}

    def load_state_dict(self, state: Dict) -> None:
        self.labelled.load_state_dict(state["labelled"])
        self.ids.load_state_dict(state["ids"])
        self.slimipl.load_state_dict(state["slimipl"])
        self.num_empty_labels = state["num_empty_labels"]
