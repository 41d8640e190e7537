"""slimIPL: language-model-free iterative pseudo-labelling with a dynamic cache.

Likhomanenko et al. 2021, as used by Lugosch et al. 2022 ("Pseudo-labeling for
massively multilingual speech recognition"). The pieces are model-agnostic:

* :class:`PseudoLabelCache` holds ``(batch, pseudo_labels)`` entries; an entry
  is sampled uniformly for an unlabelled update, and with probability ``p`` it
  is replaced by a new unlabelled batch labelled by the current model.
* :class:`SlimIplSchedule` decides, from the update index alone, what every
  update does (supervised warm-up, cache filling, mixing, cropping warm-up).
* :class:`SlimIpl` drives both: ``next_batch(update)`` returns the batch to
  train on and its pseudo-labels (``None`` for labelled data).

The caller supplies ``label_fn(batch, crop) -> pseudo_labels``; in a trainer it
puts the model in eval mode, decodes greedily without an LM (crop-and-stitch
through :mod:`icefall_ext.decode.chunked` when ``crop`` is true) and restores
train mode. Labels therefore always come from the model as it is at the moment
of labelling, before the current update's optimiser step.
"""

import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

import torch

logger = logging.getLogger(__name__)

LABELLED = "labelled"
UNLABELLED = "unlabelled"

Generator = Union[torch.Generator, random.Random]
LabelFn = Callable[[Any, bool], Any]


class CacheEntry(NamedTuple):
    """One unlabelled batch with the pseudo-labels the model gave it when it was labelled."""

    batch: Any
    labels: Any


class _RandomSource:
    """Uniform draws from either a ``torch.Generator`` or a ``random.Random``, with saveable state."""

    def __init__(self, generator: Generator):
        if not isinstance(generator, (torch.Generator, random.Random)):
            raise TypeError(f"generator must be torch.Generator or random.Random, got {type(generator)}")
        self._gen = generator

    def index(self, n: int) -> int:
        if isinstance(self._gen, torch.Generator):
            return int(torch.randint(n, (1,), generator=self._gen).item())
        return self._gen.randrange(n)

    def uniform(self) -> float:
        if isinstance(self._gen, torch.Generator):
            return float(torch.rand(1, generator=self._gen, dtype=torch.float64).item())
        return self._gen.random()

    def state(self) -> Dict[str, Any]:
        if isinstance(self._gen, torch.Generator):
            return {"kind": "torch", "state": self._gen.get_state()}
        return {"kind": "python", "state": self._gen.getstate()}

    def set_state(self, state: Dict[str, Any]) -> None:
        expected = "torch" if isinstance(self._gen, torch.Generator) else "python"
        if state["kind"] != expected:
            raise ValueError(f"saved generator is {state['kind']!r} but this cache uses {expected!r}")
        if expected == "torch":
            self._gen.set_state(state["state"])
        else:
            version, internal, gauss_next = state["state"]
            self._gen.setstate((version, tuple(internal), gauss_next))


class PseudoLabelCache:
    """Fixed-capacity store of :class:`CacheEntry` (slimIPL's dynamic cache; paper: size 1000, p = 0.1)."""

    def __init__(self, size: int, replace_prob: float, generator: Generator):
        if size <= 0:
            raise ValueError(f"cache size must be positive, got {size}")
        if not 0.0 <= replace_prob <= 1.0:
            raise ValueError(f"replace_prob must be in [0, 1], got {replace_prob}")
        self.size = size
        self.replace_prob = replace_prob
        self._rng = _RandomSource(generator)
        self._entries: List[CacheEntry] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def is_full(self) -> bool:
        return len(self._entries) >= self.size

    def add(self, entry: Tuple[Any, Any]) -> None:
        """Append an entry; the cache must not be full."""
        if self.is_full:
            raise RuntimeError(f"pseudo-label cache is full ({self.size} entries)")
        self._entries.append(CacheEntry(*entry))

    def sample(self) -> Tuple[int, CacheEntry]:
        """Draw an entry uniformly at random (the entry stays in the cache)."""
        if not self._entries:
            raise RuntimeError("cannot sample from an empty pseudo-label cache")
        index = self._rng.index(len(self._entries))
        return index, self._entries[index]

    def maybe_replace(self, index: int, make_entry: Callable[[], Tuple[Any, Any]]) -> bool:
        """With probability ``replace_prob`` put ``make_entry()`` at ``index``; return whether it did.

        Exactly one random number is drawn per call, and ``make_entry`` (which
        labels a fresh batch) runs only when the entry is replaced.
        """
        if not 0 <= index < len(self._entries):
            raise IndexError(f"cache index {index} out of range for {len(self._entries)} entries")
        if self._rng.uniform() >= self.replace_prob:
            return False
        self._entries[index] = CacheEntry(*make_entry())
        return True

    def state_dict(self) -> Dict[str, Any]:
        """Entries and generator state; loading it into a new cache resumes the same random sequence."""
        return {
            "size": self.size,
            "replace_prob": self.replace_prob,
            "entries": [[entry.batch, entry.labels] for entry in self._entries],
            "rng": self._rng.state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["size"] != self.size or state["replace_prob"] != self.replace_prob:
            raise ValueError(
                f"cache configured with size={self.size}, replace_prob={self.replace_prob} but the saved "
                f"state has size={state['size']}, replace_prob={state['replace_prob']}"
            )
        if len(state["entries"]) > self.size:
            raise ValueError(f"saved cache has {len(state['entries'])} entries, more than size {self.size}")
        self._rng.set_state(state["rng"])
        self._entries = [CacheEntry(batch, labels) for batch, labels in state["entries"]]


@dataclass(frozen=True)
class SlimIplSchedule:
    """What update ``k`` (0-based) does, as a pure function of ``k``.

    * ``k < warmup_updates``: supervised only (labelled batch).
    * ``warmup_updates <= k < mix_start`` (``fill_updates`` updates, one per
      cache entry): labelled batch, and one unlabelled batch is labelled and
      added to the cache.
    * ``k >= mix_start``: with ``m = k - mix_start``, update ``k`` is labelled
      iff ``m % (lambda_ + 1) == 0``; the other ``lambda_`` updates of each
      group train on a cached batch (``lambda_`` unlabelled updates per
      labelled one; ``lambda_ = 0`` means labelled only).
    * ``use_cropping(k)``: true for the first ``crop_updates`` updates of
      pseudo-label generation, i.e. ``warmup_updates <= k < warmup_updates +
      crop_updates``.
    """

    warmup_updates: int
    fill_updates: int
    lambda_: int = 10
    crop_updates: int = 0

    def __post_init__(self) -> None:
        for name in ("warmup_updates", "fill_updates", "lambda_", "crop_updates"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")

    @property
    def mix_start(self) -> int:
        return self.warmup_updates + self.fill_updates

    def phase(self, update: int) -> str:
        """``"supervised"``, ``"fill"`` or ``"mix"``."""
        if update < self.warmup_updates:
            return "supervised"
        if update < self.mix_start:
            return "fill"
        return "mix"

    def is_labelled(self, update: int) -> bool:
        if update < self.mix_start:
            return True
        return (update - self.mix_start) % (self.lambda_ + 1) == 0

    def fills_cache(self, update: int) -> bool:
        return self.phase(update) == "fill"

    def use_cropping(self, update: int) -> bool:
        return self.warmup_updates <= update < self.warmup_updates + self.crop_updates


class SlimIpl:
    """Chooses every update's batch according to a :class:`SlimIplSchedule`.

    ``next_batch(update)`` must be called once per update with consecutive
    indices starting at 0 (or at the saved position after
    :meth:`load_state_dict`). Data iterators are consumed in order; to resume,
    pass iterators positioned after ``labelled_batches`` / ``unlabelled_batches``
    of the saved state (e.g. through the samplers' own state).
    """

    def __init__(
        self,
        schedule: SlimIplSchedule,
        cache: PseudoLabelCache,
        label_fn: LabelFn,
        labelled_iter: Iterable[Any],
        unlabelled_iter: Iterable[Any],
    ):
        if schedule.fill_updates != cache.size:
            raise ValueError(
                f"schedule.fill_updates ({schedule.fill_updates}) must equal the cache size ({cache.size}): "
                "each fill update adds one entry"
            )
        self.schedule = schedule
        self.cache = cache
        self.label_fn = label_fn
        self._labelled = iter(labelled_iter)
        self._unlabelled = iter(unlabelled_iter)
        self._next_update = 0
        self.labelled_batches = 0
        self.unlabelled_batches = 0
        self.num_replacements = 0

    def next_batch(self, update: int) -> Tuple[Any, Optional[Any], str]:
        """Return ``(batch, pseudo_labels or None, kind)`` for this update; kind is "labelled" or "unlabelled"."""
        if update != self._next_update:
            raise ValueError(f"expected update {self._next_update}, got {update}")
        self._next_update += 1
        self._log_transitions(update)

        if self.schedule.fills_cache(update):
            self.cache.add(self._label_new(update))
        if self.schedule.is_labelled(update):
            self.labelled_batches += 1
            return next(self._labelled), None, LABELLED

        index, entry = self.cache.sample()
        if self.cache.maybe_replace(index, lambda: self._label_new(update)):
            self.num_replacements += 1
        return entry.batch, entry.labels, UNLABELLED

    def _label_new(self, update: int) -> CacheEntry:
        batch = next(self._unlabelled)
        self.unlabelled_batches += 1
        return CacheEntry(batch, self.label_fn(batch, self.schedule.use_cropping(update)))

    def _log_transitions(self, update: int) -> None:
        schedule = self.schedule
        if update == schedule.warmup_updates and schedule.fill_updates:
            logger.info("slimIPL: update %d starts filling the cache (%d entries)", update, self.cache.size)
        if update == schedule.mix_start:
            logger.info("slimIPL: update %d starts mixing (lambda=%d)", update, schedule.lambda_)
        if schedule.crop_updates and update == schedule.warmup_updates + schedule.crop_updates:
            logger.info("slimIPL: update %d ends the cropping warm-up", update)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "next_update": self._next_update,
            "labelled_batches": self.labelled_batches,
            "unlabelled_batches": self.unlabelled_batches,
            "num_replacements": self.num_replacements,
            "cache": self.cache.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.cache.load_state_dict(state["cache"])
        self._next_update = state["next_update"]
        self.labelled_batches = state["labelled_batches"]
        self.unlabelled_batches = state["unlabelled_batches"]
        self.num_replacements = state["num_replacements"]
