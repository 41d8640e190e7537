"""The training loop shared by every recipe (supervised, fine-tuning, slimIPL pseudo-labelling, pre-training).

One :class:`Trainer` owns the model, optimiser, scheduler, data sources, and the exact-resume state. What is
optimised and how it is validated is the run's *objective* (:mod:`icefall_ext.train.objectives`: ASR losses,
BEST-RQ, ...). A *batch source* yields ``(batch, labels, kind)``: ``labels`` is ``None`` for labelled batches (the
batch's own tokens are used) or a list of pseudo-label token sequences. Everything needed to continue bit-exactly —
model, optimiser, scheduler, sampler positions, RNG states, grad scaler, counters — goes into each checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import CutMix

from ..data.dataset import AsrDataset, make_dataloader, make_sampler, make_spec_augment
from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_old_update_checkpoints,
    save_checkpoint,
)
from .objectives import (  # noqa: F401  (LOSS_KEYS: re-exported)
    LOSS_KEYS,
    Objective,
    language_balance_weights,
    objective_for,
)
from .precision import autocast_dtype
from .schedule import make_scheduler

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``train_config.json`` beside the checkpoints."""

    exp_dir: str
    lang_dir: str = ""  # token table (and languages.txt); not needed by self-supervised pre-training
    train_cuts: List[str] = field(default_factory=list)
    valid_cuts: List[str] = field(default_factory=list)
    num_epochs: int = 10
    max_updates: int = 0
    max_duration: float = 200.0
    num_buckets: int = 10
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-3
    scheduler: str = "noam"
    warmup_updates: int = 500
    # Eden (icefall): lr = base * ((u^2 + B^2) / B^2)^-0.25 * ((e^2 + E^2) / E^2)^-0.25 * warm-up from eden_warmup_start;
    # icefall's zipformer recipe uses B = 7500, E = 3.5 (e = epochs completed, u = updates)
    eden_lr_batches: float = 5000.0
    eden_lr_epochs: float = 6.0
    eden_warmup_start: float = 0.5
    # gradient clipping: ScaledAdam clips to clipping_scale x the median recent norm (icefall: 2.0);
    # AdamW clips the total norm to grad_clip (0: off). A non-finite norm skips the update on every rank.
    clipping_scale: float = 2.0
    grad_clip: float = 5.0
    # updates over which the transducer moves from the simple to the pruned loss (icefall's warm_step)
    warm_step: int = 2000
    # the Zipformer's scheduled regularisers advance by update * max_duration * world_size / ref_duration (icefall)
    ref_duration: float = 600.0
    ctc_scale: float = 1.0
    lid_scale: float = 0.0
    # language-ID loss weighted per language by N / (L * n_lang) (n_lang: training utterances of the language), so
    # that every language carries the same weight however imbalanced the training data
    lid_balance: bool = False
    # submodules whose parameters are all frozen (--freeze-encoder) run in eval mode while the rest trains: no
    # dropout noise on the features the trained parts learn from, BatchNorm statistics kept as loaded
    frozen_eval: bool = True
    simple_scale: float = 0.5
    pruned_scale: float = 1.0
    prune_range: int = 5
    dtype: str = "float32"  # autocast: float32 | bfloat16 | float16 | auto (precision.py: bf16 where native)
    spec_augment: bool = True
    spec_aug_start_update: int = 0
    # time masks per utterance (Lugosch et al.: 2 for Common Voice, 10 for LibriSpeech fine-tuning)
    spec_aug_time_masks: int = 10
    noise_cuts: List[str] = field(default_factory=list)
    noise_prob: float = 0.5
    noise_snr_min: float = 10.0
    noise_snr_max: float = 20.0
    # limited supervision (as Libri-light's 10 h / 1 h): train on a seeded random subset of the training cuts of
    # this many hours (0: all of them)
    train_hours: float = 0.0
    # fine-tuning against forgetting: cuts of the original training data, mixed in as this fraction of the audio
    mix_cuts: List[str] = field(default_factory=list)
    mix_ratio: float = 0.0
    seed: int = 42
    save_every_n: int = 0
    keep_last_k: int = 3
    valid_every_n: int = 0
    valid_max_duration: float = 0.0
    log_every_n: int = 25
    min_duration: float = 0.3
    max_cut_duration: float = 30.0
    num_workers: int = 0
    # read the training manifests while iterating (for corpora larger than memory; Shar dirs always are)
    lazy: bool = False
    # slimIPL (used when unlabelled_cuts is given)
    unlabelled_cuts: List[str] = field(default_factory=list)
    slimipl_supervised_updates: int = 0
    slimipl_cache_size: int = 1000
    slimipl_replace_prob: float = 0.1
    slimipl_lambda: int = 10
    slimipl_crop_updates: int = 0
    slimipl_crop_seconds: float = 10.0
    slimipl_unlabelled_max_duration: float = 0.0
    # encoder dropout from the first pseudo-labelling update on (flashlight's slimIPL_dyn_dropout; < 0: unchanged)
    slimipl_dyn_dropout: float = 0.1
    # speech translation (--task st): the source character table (auxiliary CTC on the transcript: ctc_scale; text
    # input), and joint machine translation: as many text pairs as utterances in each batch, weighted by mt_scale
    source_lang_dir: str = ""
    # auxiliary CTC on the translation's own tokens (no transcript needed)
    target_ctc_scale: float = 0.0
    mt_scale: float = 0.0
    mt_text: List[str] = field(default_factory=list)


def _rng_state() -> Dict:
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> list:
    """numpy's RNG state with its key array as a tensor, so checkpoints load with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _to_tuple(x):
    """Checkpoints loaded with weights_only give lists where the RNG APIs want tuples."""
    if isinstance(x, list):
        return tuple(_to_tuple(v) for v in x)
    return x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochEnd(Exception):
    """Raised by a batch source when its labelled data is exhausted (the trainer saves epoch-N.pt)."""


class SamplerEpochs:
    """Batches of a resumable lhotse sampler (or a loader over it), epoch after epoch.

    ``epoch`` is the epoch in progress (1-based); the state is the epoch and the sampler's own position.
    """

    def __init__(self, sampler, iterable=None) -> None:
        self.sampler = sampler
        self.iterable = sampler if iterable is None else iterable
        self.epoch = 1
        self._it: Optional[Iterator] = None

    def next_in_epoch(self):
        """The next batch, or None when the epoch just ended (``epoch`` then moves on)."""
        if self._it is None:
            self.sampler.set_epoch(self.epoch)
            self._it = iter(self.iterable)
        try:
            return next(self._it)
        except StopIteration:
            self._it = None
            self.epoch += 1
            return None

    def state_dict(self) -> Dict:
        return {"epoch": self.epoch, "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: Dict) -> None:
        self.epoch = state["epoch"]
        self.sampler.load_state_dict(state["sampler"])
        self._it = None


class SupervisedSource(SamplerEpochs):
    """Labelled batches; the end of each epoch is signalled with :class:`EpochEnd` (the trainer saves epoch-N)."""

    def __init__(self, sampler, dataset: AsrDataset, num_workers: int = 0) -> None:
        super().__init__(sampler, make_dataloader(dataset, sampler, num_workers))

    def take_epoch_end(self) -> bool:
        """Epoch ends of this source surface as :class:`EpochEnd` from :meth:`next`, never afterwards."""
        return False

    def next(self, update: int) -> Tuple[Dict, None, str]:
        batch = self.next_in_epoch()
        if batch is not None:
            return batch, None, "labelled"
        if self.sampler.diagnostics.stats_per_epoch[self.epoch - 1].kept_batches == 0:
            raise RuntimeError(
                f"epoch {self.epoch - 1} has no batches for rank {self.sampler.rank}: too few cuts for "
                f"--max-duration and the world size (drop_last drops uneven batches across ranks)")
        raise EpochEnd()


def is_shar_dir(path) -> bool:
    """A directory written by ``lhotse shar export`` (``cuts.NNNNNN.jsonl.gz`` shards)."""
    return Path(path).is_dir() and any(Path(path).glob("cuts.*.jsonl*"))


def load_cuts(paths: List[str], lazy: bool = False) -> CutSet:
    """The cuts of the given manifests (``.jsonl.gz``) or Shar directories, one after the other.

    ``lazy``: read while iterating (never all in memory; Shar directories are always read so); otherwise eager.
    An empty manifest (e.g. every pseudo-label filtered out) is reported and skipped.
    """
    from lhotse import load_manifest_lazy

    parts = []
    for p in paths:
        if is_shar_dir(p):
            parts.append(CutSet.from_shar(in_dir=p))
            lazy = True
            continue
        cs = load_manifest_lazy(p) if lazy else CutSet.from_file(p)
        if cs is None or (lazy and next(iter(cs), None) is None):  # lhotse reads an empty manifest as None
            logger.warning("%s holds no cuts", p)
            continue
        parts.append(cs)
    if not parts:
        return CutSet.from_cuts([])
    if lazy:
        out = parts[0]
        for part in parts[1:]:
            out = out + part  # lazily chained
        return out
    return CutSet.from_cuts(c for cs in parts for c in cs)


def draw_by_duration(cuts: CutSet, seconds: float, seed: int = 42) -> Tuple[List, float]:
    """Cuts drawn in a seeded random order until they hold at least ``seconds`` of audio (all, if there is less).

    Returns the drawn cuts and their total duration in seconds.
    """
    pool = list(cuts)
    random.Random(seed).shuffle(pool)
    picked, total = [], 0.0
    for cut in pool:
        if total >= seconds:
            break
        picked.append(cut)
        total += cut.duration
    return picked, total


def limit_hours(cuts: CutSet, hours: float, seed: int = 42) -> CutSet:
    """A seeded random subset of ``cuts`` with about ``hours`` of audio (limited-supervision training; 0: all)."""
    if hours < 0:
        raise ValueError(f"--train-hours must be >= 0, got {hours}")
    if hours == 0:
        return cuts
    available = sum(c.duration for c in cuts)
    picked, total = draw_by_duration(cuts, hours * 3600, seed)
    if total < hours * 3600:
        logger.warning("--train-hours %.3f: the training cuts hold only %.3f h: using all of them", hours,
                       available / 3600)
    logger.info("limited supervision: %d of the training cuts (%.3f h of %.3f h)", len(picked), total / 3600,
                available / 3600)
    return CutSet.from_cuts(picked)


def mix_in(new: CutSet, original: CutSet, ratio: float, seed: int = 42) -> CutSet:
    """``new`` plus a random subset of ``original`` that makes up ``ratio`` of the total duration.

    With ratio r and D seconds of new data, about r/(1-r)*D seconds of original data are drawn (all of it, with
    a warning, when there is not that much). The subset is fixed for the run (drawn with ``seed``).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mix ratio must be in [0, 1), got {ratio}")
    if ratio == 0.0:
        return new
    new_seconds = sum(c.duration for c in new)
    want = ratio / (1.0 - ratio) * new_seconds
    picked, total = draw_by_duration(original, want, seed)
    if total < want:
        logger.warning("only %.1f s of original data for a mix ratio of %.2f (wanted %.1f s): using all of it",
                       total, ratio, want)
    logger.info("mixed in %d original cuts (%.1f s) with %d new cuts (ratio %.2f of the audio)", len(picked),
                total, len(new), total / max(total + new_seconds, 1e-9))
    return CutSet.from_cuts(list(new) + picked)


class Trainer:
    """Runs updates until ``num_epochs`` or ``max_updates``; resumes from the latest checkpoint in exp_dir."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, model_config: Dict, tokenizer,
                 languages: List[str], *, rank: int = 0, world_size: int = 1,
                 device: Optional[torch.device] = None, objective: Optional[Objective] = None) -> None:
        self.cfg = cfg
        self.exp_dir = Path(cfg.exp_dir)
        self.rank, self.world_size = rank, world_size
        self.device = device or torch.device("cpu")
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.languages = languages
        self.model = model.to(self.device)
        self.objective = objective or objective_for(model)
        self.ddp_model = self.model
        if world_size > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, find_unused_parameters=True,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.optimizer = self._make_optimizer()
        self.scheduler = make_scheduler(cfg.scheduler, self.optimizer, cfg.warmup_updates, cfg.max_updates,
                                        cfg.eden_lr_batches, cfg.eden_lr_epochs, cfg.eden_warmup_start)
        self.amp_dtype = autocast_dtype(cfg.dtype, self.device)
        logger.info("autocast: %s (--dtype %s)", str(self.amp_dtype or "off, float32").replace("torch.", ""), cfg.dtype)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.update = 0
        self.num_nonfinite = 0
        self.num_oom = 0
        self.tb = None
        self.source = None  # set by build_sources

    # ----------------------------------------------------------------- set-up
    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if self.cfg.optimizer == "scaled_adam":
            from .optim import ScaledAdam

            # ScaledAdam's own clipping (median-relative, skips non-finite norms) is the only clipping
            return ScaledAdam(params, lr=self.cfg.lr, clipping_scale=self.cfg.clipping_scale or None)
        raise ValueError(f"unknown optimizer {self.cfg.optimizer!r} (adamw, scaled_adam)")

    def build_sources(self, train_cuts: CutSet, valid_cuts: Optional[CutSet],
                      unlabelled_cuts: Optional[CutSet] = None) -> None:
        cfg = self.cfg
        self.spec_augment = make_spec_augment(num_frame_masks=cfg.spec_aug_time_masks) if cfg.spec_augment else None
        noise = None
        # each rank draws its own noise; the generator's state is part of the rank's checkpoint state
        self.noise_rng = random.Random(cfg.seed + 1000 * (self.rank + 1))
        if cfg.noise_cuts:  # additive noise (e.g. MUSAN cuts with features), mixed in the feature domain by lhotse
            noise = CutMix(load_cuts(cfg.noise_cuts).drop_supervisions().to_eager(),
                           snr=(cfg.noise_snr_min, cfg.noise_snr_max), p=cfg.noise_prob, seed=self.noise_rng,
                           preserve_id=True)
        self.train_dataset = AsrDataset(self.tokenizer, self.languages, noise=noise, target=self.objective.target,
                                        video=self.objective.video)
        sampler = make_sampler(train_cuts, cfg.max_duration, shuffle=True, num_buckets=cfg.num_buckets,
                               seed=cfg.seed, world_size=self.world_size, rank=self.rank, drop_last=self.world_size > 1)
        labelled = SupervisedSource(sampler, self.train_dataset, cfg.num_workers)
        if unlabelled_cuts is None:
            self.source = labelled
        else:
            from .slimipl_source import SlimIplSource

            self.source = SlimIplSource(self, labelled, unlabelled_cuts)
        self.valid_cuts = valid_cuts
        weight = language_balance_weights(train_cuts, self.languages) if cfg.lid_balance else None
        self.lid_weight = weight.to(self.device) if weight is not None else None  # moved once, not every step

    def _spec_augment_active(self) -> bool:
        return self.spec_augment is not None and self.update >= self.cfg.spec_aug_start_update

    # ----------------------------------------------------------------- state
    def rank_state(self) -> Dict:
        """What differs between ranks: data position, pseudo-label cache, RNG streams."""
        return {"source": self.source.state_dict(), "rng": _rng_state(),
                "noise_rng": self.noise_rng.getstate()}

    def load_rank_state(self, state: Dict) -> None:
        self.source.load_state_dict(state["source"])
        _set_rng_state(state["rng"])
        if "noise_rng" in state:
            self.noise_rng.setstate(_to_tuple(state["noise_rng"]))

    def state_dict(self, rank_states: Optional[List[Dict]] = None) -> Dict:
        """The checkpoint; ``rank_states`` (one per rank, gathered by :meth:`save`) are stored as ``ranks``."""
        own = rank_states[0] if rank_states else self.rank_state()
        return {
            "model": self.model.state_dict(),
            "model_config": self.model_config,
            "tokens": list(self.tokenizer.token_table) if self.tokenizer is not None else [],
            "languages": list(self.languages),
            "train_config": asdict(self.cfg),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "source": own["source"],
            "rng": own["rng"],
            "noise_rng": own["noise_rng"],
            "ranks": rank_states or [own],
            "update": self.update,
            "epoch": self.epoch,
            "num_nonfinite": self.num_nonfinite,
            "num_oom": self.num_oom,
        }

    @property
    def epoch(self) -> int:
        return self.source.epoch

    def load_state_dict(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("ranks") or [{"source": state["source"], "rng": state["rng"]}]
        if len(ranks) == self.world_size:
            self.load_rank_state(ranks[self.rank])
        else:  # a different world size: data positions cannot be mapped; start every rank from rank 0's
            logger.warning("checkpoint written by %d ranks, resuming with %d: rank %d continues from rank 0's "
                           "data position and random streams", len(ranks), self.world_size, self.rank)
            self.load_rank_state(ranks[0])
        self.update = int(state["update"])
        self.num_nonfinite = int(state.get("num_nonfinite", 0))
        self.num_oom = int(state.get("num_oom", 0))

    def save(self, name: str) -> None:
        """Rank 0 writes the checkpoint, with every rank's own state (a collective: all ranks call it)."""
        rank_states = None
        if self.world_size > 1:
            rank_states = [None] * self.world_size
            torch.distributed.all_gather_object(rank_states, self.rank_state())
        if self.rank != 0:
            return
        save_checkpoint(self.exp_dir / name, self.state_dict(rank_states))
        logger.info("saved %s (update %d)", self.exp_dir / name, self.update)

    def maybe_resume(self) -> bool:
        path = latest_checkpoint(self.exp_dir)
        if path is None:
            return False
        self.load_state_dict(load_checkpoint(path))
        logger.info("resumed from %s at update %d, epoch %d", path, self.update, self.epoch)
        return True

    # ----------------------------------------------------------------- steps
    def autocast(self):
        """The run's mixed-precision context (a no-op in float32)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def compute_loss(self, batch: Dict, labels: Optional[List[List[int]]] = None,
                     model: Optional[torch.nn.Module] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The objective's loss of a batch, summed over its utterances, and its parts per utterance for logging."""
        return self.objective.loss(self, model or self.ddp_model, batch, labels)

    def _all_reduce_sum(self, values: List[float]) -> List[float]:
        """Sums of ``values`` over the ranks (the values themselves with one process)."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def _set_batch_count(self) -> None:
        """Drive the model's scheduled regularisers by the duration-adjusted update count (icefall's
        ``batch_idx_train * max_duration * world_size / ref_duration``), resumed and skipped batches included."""
        count = self.update * self.cfg.max_duration * self.world_size / max(self.cfg.ref_duration, 1e-9)
        for module in self.model.modules():
            if module is not self.model and hasattr(module, "set_batch_count"):
                module.set_batch_count(count)

    def _skip(self, why: str, batch: Dict) -> None:
        """Every rank skips this update (they agreed), and the schedules still advance like a taken one."""
        logger.warning("update %d: %s; the update is skipped on every rank; cuts of rank %d: %s", self.update, why,
                       self.rank, ",".join(batch["cut_ids"][:10]))
        self.optimizer.zero_grad(set_to_none=True)
        self._idle_update()

    def _idle_update(self) -> None:
        """An update without an optimiser step (a skipped batch; slimIPL filling its cache, which every rank does
        on the same update): the schedule advances as in a taken one."""
        with warnings.catch_warnings():  # LambdaLR warns when it steps before any optimiser step
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _train_mode(self) -> None:
        """Train mode, except (``frozen_eval``) for direct submodules none of whose parameters train."""
        self.model.train()
        if self.cfg.frozen_eval:
            for child in self.model.children():
                params = list(child.parameters())
                if params and not any(p.requires_grad for p in params):
                    child.eval()

    def train_step(self, batch: Dict, labels: Optional[List[List[int]]]) -> Optional[Dict[str, float]]:
        """One optimiser update; returns the loss parts, or None when the batch was skipped.

        Under DDP the ranks agree before ``backward`` (one all-reduce of the utterance count and a bad-batch flag):
        a non-finite loss or an out-of-memory error on any rank skips the update on all of them. The loss is
        normalised by the utterances of all ranks, so that the averaged gradient equals that of one process on
        the union of the batches.
        """
        self._train_mode()
        self._set_batch_count()
        if self._spec_augment_active():
            batch = dict(batch, features=self.spec_augment(batch["features"]))
        problem = None
        try:
            loss, parts = self.compute_loss(batch, labels)
            if not torch.isfinite(loss):
                problem = f"non-finite loss {float(loss.detach())}"
                self.num_nonfinite += 1
        except torch.cuda.OutOfMemoryError:
            problem = "CUDA out of memory"
            self.num_oom += 1
            torch.cuda.empty_cache()
        total_utts, num_bad = self._all_reduce_sum([float(len(batch["cut_ids"])), float(problem is not None)])
        if num_bad:
            if problem is None:
                self.num_nonfinite += 1
                problem = f"{int(num_bad)} of {self.world_size} ranks had a bad batch"
            self._skip(problem, batch)
            return None
        self.scaler.scale(loss * (self.world_size / total_utts)).backward()
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))) \
            if grads else 0.0
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            # gradients are identical on all ranks after DDP's all-reduce: every rank takes this branch
            self.num_nonfinite += 1
            self._skip(f"non-finite gradient norm {grad_norm} (finite loss {float(loss.detach()):.3f})", batch)
            return None
        if self.cfg.optimizer != "scaled_adam" and self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)  # with fp16, the scaler skips steps with inf/nan and lowers its scale
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        parts["loss"] = float(loss.detach()) / len(batch["cut_ids"])
        parts["grad_norm"] = grad_norm
        return parts

    # ----------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> Optional[Dict]:
        """The objective's validation metrics on the whole validation set, computed by rank 0 (the other ranks
        return None); appended to valid.jsonl and TensorBoard."""
        if self.valid_cuts is None or self.rank != 0:
            return None
        self.model.eval()
        metrics = self.objective.validate(self)
        self._train_mode()
        result = {"update": self.update, "epoch": self.epoch, **metrics}
        with open(self.exp_dir / "valid.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"valid/{key}", value, self.update)
        logger.info("validation at update %d: %s", self.update, self.objective.describe(metrics))
        return result

    # ----------------------------------------------------------------- main loop
    def run(self) -> None:
        cfg = self.cfg
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.exp_dir / "tensorboard"))
        resumed = self.maybe_resume()
        if not resumed:
            seed_everything(cfg.seed + self.rank)
        if self._done():
            logger.info("training already finished (update %d, epoch %d)", self.update, self.epoch)
            return
        t0, audio_sec, window = time.time(), 0.0, []
        progress = _progress(cfg.max_updates, self.update, self.rank == 0)
        while not self._done():
            try:
                batch, labels, kind = self.source.next(self.update)
            except EpochEnd:
                self._end_epoch()
                continue
            parts = self.train_step(batch, labels) if batch is not None else self._idle_update()
            self.update += 1
            if self.source.take_epoch_end():  # slimIPL: its labelled data ran out while it assembled this update
                self._end_epoch()
            progress.update(1)
            audio_sec += float(batch["feature_lens"].sum()) * 0.01 if batch is not None else 0.0
            if parts is not None:
                window.append(parts)
            if self.update % cfg.log_every_n == 0 and window:
                self._log(window, kind, audio_sec / max(1e-6, time.time() - t0), progress)
                window = []
            if cfg.save_every_n and self.update % cfg.save_every_n == 0:
                self.save(f"checkpoint-{self.update}.pt")
                remove_old_update_checkpoints(self.exp_dir, cfg.keep_last_k)
            if cfg.valid_every_n and self.update % cfg.valid_every_n == 0:
                self.validate()
        progress.close()
        if self.cfg.max_updates and self.update >= self.cfg.max_updates:
            # stopped inside an epoch: its checkpoint holds the partial epoch
            self.save(f"epoch-{self.epoch}.pt")
            if cfg.valid_every_n == 0 or self.update % cfg.valid_every_n != 0:
                self.validate()
        logger.info("done: %d updates, %d non-finite batches skipped, %d OOM batches skipped",
                    self.update, self.num_nonfinite, self.num_oom)

    def _end_epoch(self) -> None:
        """Epoch ``self.epoch - 1`` is complete: its checkpoint, per-epoch validation, Eden's epoch."""
        self.save(f"epoch-{self.epoch - 1}.pt")
        if self.cfg.valid_every_n == 0:
            self.validate()  # without --valid-every-n, validate once per epoch
        if hasattr(self.scheduler, "set_epoch"):
            self.scheduler.set_epoch(self.epoch - 1)  # Eden's epoch: epochs completed (icefall)

    def _done(self) -> bool:
        """Stop after --num-epochs epochs or --max-updates updates, whichever comes first (0 = no limit)."""
        if self.cfg.max_updates and self.update >= self.cfg.max_updates:
            return True
        return bool(self.cfg.num_epochs) and self.epoch > self.cfg.num_epochs

    def _log(self, window: List[Dict], kind: str, rtf_x: float, progress) -> None:
        avg = {k: sum(w.get(k, 0.0) for w in window) / len(window) for k in window[-1]}
        lr = self.scheduler.get_last_lr()[0]
        msg = ", ".join(f"{k} {v:.3f}" for k, v in avg.items() if k != "frames")
        logger.info("epoch %d, update %d (%s): %s, lr %.2e, %.0fx real time", self.epoch, self.update, kind, msg,
                    lr, rtf_x)
        if self.tb is not None:
            for k, v in avg.items():
                self.tb.add_scalar(f"train/{k}", v, self.update)
            self.tb.add_scalar("train/lr", lr, self.update)
        progress.set_postfix(loss=f"{avg.get('loss', 0):.3f}", lr=f"{lr:.1e}")


class _NullProgress:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NullProgress()
    from tqdm import tqdm

    return tqdm(total=total or None, initial=initial, desc="train", unit="upd", mininterval=5.0,
                dynamic_ncols=True)
