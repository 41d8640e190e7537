"""Training objectives: what a run optimises and how it is validated. The trainer is the same for all of them.

An objective turns a batch into a loss summed over the batch's utterances (the trainer normalises it over the
utterances of all ranks) plus per-utterance parts to log, and scores a validation set. ``objective_for`` picks the
objective a model was built for:

* :class:`AsrObjective` — CTC / language ID / pruned RNN-T losses weighted by the run's scales; validation CER.
* :class:`~icefall_ext.train.translation.SpeechTranslationObjective` — speech translation (+ CTC, + joint MT).
* :class:`BestRqObjective` — BEST-RQ masked prediction (``icefall_ext.pretrain.best_rq``); validation loss,
  masked-frame accuracy, codes used and perplexity per codebook.
* :class:`~icefall_ext.train.mslam.MslamObjective` — mSLAM joint speech-text pre-training
  (``icefall_ext.pretrain.mslam``): BEST-RQ + span-masked text + paired CTC.
* :class:`~icefall_ext.train.av_pretrain.AvPretrainObjective` — audio-visual MAE / contrastive pre-training
  (``icefall_ext.pretrain.av_mae``); validation MAE / CLR losses and audio->video retrieval.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch

from ..data.dataset import AsrDataset, cut_language, make_dataloader, make_sampler
from ..data.scoring import score

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

logger = logging.getLogger(__name__)

LOSS_KEYS = ("ctc", "lid", "simple", "pruned")


class Objective:
    """Interface: ``loss`` for a training batch, ``validate`` for the validation set, ``describe`` for the log."""

    name = "objective"
    target = "text"  # what the training batches' tokens encode: "text" (transcripts) or "translation"
    video = False  # whether the training batches carry the cuts' video frames (``video`` / ``video_lens``)

    def loss(self, trainer: "Trainer", model: torch.nn.Module, batch: Dict,
             labels: Optional[List[List[int]]]) -> Tuple[torch.Tensor, Dict[str, float]]:
        raise NotImplementedError

    def validate(self, trainer: "Trainer") -> Dict:
        raise NotImplementedError

    def describe(self, result: Dict) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in result.items() if isinstance(v, float))

    @staticmethod
    def validation_batches(trainer: "Trainer", dataset: AsrDataset):
        """The whole validation set in a fixed order, on one process."""
        max_dur = trainer.cfg.valid_max_duration or trainer.cfg.max_duration
        sampler = make_sampler(trainer.valid_cuts, max_dur, shuffle=False, num_buckets=2, world_size=1, rank=0)
        return make_dataloader(dataset, sampler)


def language_balance_weights(cuts, languages: Sequence[str]) -> Optional[torch.Tensor]:
    """(L,) language-ID loss weights N / (L' * n_l): n_l training utterances of language l, N of all L' languages
    present; absent languages get 0. Every present language then carries the same total weight, and the weights
    average 1 over the training utterances (the loss keeps its scale). None when no cut has a known language."""
    index = {lang: i for i, lang in enumerate(languages)}
    counts = torch.zeros(len(languages), dtype=torch.float64)
    for cut in cuts:
        i = index.get(cut_language(cut))
        if i is not None:
            counts[i] += 1
    present = counts > 0
    if not bool(present.any()):
        return None
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.float()


class AsrObjective(Objective):
    """Weighted ASR losses; the transducer's simple/pruned weights follow icefall's warm-up over ``warm_step``."""

    name = "asr"

    def loss(self, trainer, model, batch, labels):
        cfg = trainer.cfg
        feats = batch["features"].to(trainer.device)
        lens = batch["feature_lens"].to(trainer.device)
        tokens = labels if labels is not None else batch["tokens"]
        langs = batch["languages"].to(trainer.device)
        # per-language adapters route every utterance (-1: no adapter); otherwise the language-ID loss is taken
        # only on batches whose languages are all known
        routed = getattr(trainer.model, "adapters", None) is not None
        with trainer.autocast():
            out = model(feats, lens, tokens, langs if routed or (langs >= 0).all() else None,
                        prune_range=cfg.prune_range, lid=cfg.lid_scale > 0,
                        lid_weight=getattr(trainer, "lid_weight", None))
        scales = {"ctc": cfg.ctc_scale, "lid": cfg.lid_scale, "simple": cfg.simple_scale, "pruned": cfg.pruned_scale}
        if cfg.simple_scale and "pruned" in out:
            # icefall's warm-up: rely on the simple loss first, then bring in the pruned loss over warm_step updates
            warm = min(1.0, trainer.update / max(1, cfg.warm_step))
            scales["simple"] = 1.0 - warm * (1.0 - cfg.simple_scale)
            scales["pruned"] = cfg.pruned_scale * (0.1 + 0.9 * warm)
        n = float(feats.shape[0])
        loss = sum(scales[k] * out[k].float() for k in LOSS_KEYS if k in out and scales[k] != 0)
        parts = {k: float(out[k].detach()) / n for k in LOSS_KEYS if k in out}
        parts["frames"] = float(out.get("num_frames", torch.tensor(0.0)))
        return loss, parts

    def validate(self, trainer):
        """Loss; CER (total, macro over languages, per language) when the model transcribes; language-ID
        accuracy when it has a language-ID head and the set's languages are in its table."""
        from ..decode.search import decode_encoder_output, encode_batch

        model = trainer.model
        transcribes = model.ctc is not None or model.decoder is not None
        # held-out text may contain characters the table lacks: the loss skips them, CER scores the full text
        dataset = AsrDataset(trainer.tokenizer, trainer.languages, skip_unknown_tokens=True, video=False)
        refs, hyps, langs, total, n, lid_right, lid_total = [], [], [], 0.0, 0, 0, 0
        for batch in self.validation_batches(trainer, dataset):
            loss, _ = self.loss(trainer, model, batch, None)
            total += float(loss)
            n += len(batch["cut_ids"])
            enc, enc_lens = encode_batch(model, batch, trainer.device)
            if transcribes:
                hyps.extend(trainer.tokenizer.decode(h) for h in decode_encoder_output(model, enc, enc_lens))
                refs.extend(batch["texts"])
                langs.extend(c.supervisions[0].language for c in batch["cuts"])
            known = batch["languages"] >= 0
            if model.lid is not None and bool(known.any()):
                predicted = model.lid_logits(enc, enc_lens).argmax(-1).cpu()
                lid_right += int((predicted[known] == batch["languages"][known]).sum())
                lid_total += int(known.sum())
        result: Dict = {"loss": total / max(1, n)}
        if transcribes:
            report = score(refs, hyps, langs, unit="char")
            result.update(cer=report.total.rate, cer_macro=report.macro_average,
                          per_language={k: round(v.rate, 3) for k, v in report.per_language.items()})
        if lid_total:
            result["lid_accuracy"] = 100.0 * lid_right / lid_total
        return result

    def describe(self, result):
        text = f"loss {result['loss']:.3f}"
        if "cer" in result:
            text += f", CER {result['cer']:.2f}% (macro {result['cer_macro']:.2f}%) {result['per_language']}"
        if "lid_accuracy" in result:
            text += f", language ID {result['lid_accuracy']:.2f}%"
        return text


class BestRqObjective(Objective):
    """BEST-RQ masked prediction on (unlabelled) audio; the model is a ``BestRqModel``."""

    name = "best_rq"

    def loss(self, trainer, model, batch, labels):
        feats = batch["features"].to(trainer.device)
        lens = batch["feature_lens"].to(trainer.device)
        with trainer.autocast():
            out = model(feats, lens)
        n = float(feats.shape[0])
        parts = {"bestrq": float(out["bestrq"].detach()) / n,
                 "masked_fraction": float(out["masked_fraction"])}
        for key, value in out.items():
            if key.startswith(("acc_", "codes_", "ppl_")):
                parts[key] = float(value)
        parts["frames"] = float(lens.sum()) / trainer.model.encoder.subsampling_factor
        return out["bestrq"], parts

    def validate(self, trainer):
        dataset = AsrDataset(None, trainer.languages)
        sums: Dict[str, float] = {}
        n_utts = n_batches = 0
        # masking is random: validate with a fixed generator so that successive validations are comparable
        generator = torch.Generator().manual_seed(0)
        model = trainer.model
        masked = 0.0
        for batch in self.validation_batches(trainer, dataset):
            feats = batch["features"].to(trainer.device)
            lens = batch["feature_lens"].to(trainer.device)
            with trainer.autocast():
                out = model.best_rq(model.encoder, feats, lens, generator=generator)
            sums["loss"] = sums.get("loss", 0.0) + float(out["bestrq"])
            weight = float(out["num_masked"])  # accuracies: over all masked groups of the set
            masked += weight
            for key, value in out.items():
                if key.startswith("acc_"):
                    sums[key] = sums.get(key, 0.0) + float(value) * weight
                elif key.startswith(("codes_", "ppl_")) or key == "masked_fraction":
                    sums[key] = sums.get(key, 0.0) + float(value)
            n_utts += len(batch["cut_ids"])
            n_batches += 1
        result = {"loss": sums.pop("loss", 0.0) / max(1, n_utts)}
        result.update({k: v / (max(1.0, masked) if k.startswith("acc_") else max(1, n_batches))
                       for k, v in sums.items()})
        accuracies = [v for k, v in result.items() if k.startswith("acc_")]
        result["accuracy"] = sum(accuracies) / max(1, len(accuracies))
        return result  # codes_k, ppl_k, masked_fraction: means over the set's batches

    def describe(self, result):
        codebooks = sorted((k[4:] for k in result if k.startswith("acc_")), key=int)
        per = "; ".join(f"codebook {k}: acc {result['acc_' + k]:.3f}, {result['codes_' + k]:.0f} codes, "
                        f"ppl {result['ppl_' + k]:.0f}" for k in codebooks[:4])
        more = f" (+{len(codebooks) - 4} codebooks)" if len(codebooks) > 4 else ""
        return (f"loss {result['loss']:.3f}, masked accuracy {result['accuracy']:.3f}, masked fraction "
                f"{result.get('masked_fraction', 0.0):.3f}; {per}{more}")


def objective_for(model: torch.nn.Module) -> Objective:
    """The objective a model was built for (speech translation: without its source table and MT pool; ``train``
    builds it with :meth:`~icefall_ext.train.translation.SpeechTranslationObjective.from_cuts`)."""
    from ..models.st_model import SpeechTranslationModel
    from ..pretrain.best_rq import BestRqModel

    if isinstance(model, SpeechTranslationModel):
        from .translation import SpeechTranslationObjective

        return SpeechTranslationObjective()
    from ..pretrain.mslam import MslamModel

    if isinstance(model, MslamModel):  # without text data (``train`` builds it with --mslam-text)
        from .mslam import MslamObjective

        return MslamObjective()
    from ..pretrain.av_mae import AvPretrainModel

    if isinstance(model, AvPretrainModel):
        from .av_pretrain import AvPretrainObjective

        return AvPretrainObjective()
    return BestRqObjective() if isinstance(model, BestRqModel) else AsrObjective()
