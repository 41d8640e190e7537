"""slimIPL: language-model-free iterative pseudo-labelling with a dynamic cache.

Likhomanenko et al. 2021, as used by Lugosch et al. 2022 ("Pseudo-labeling for
massively multilingual speech recognition"). The pieces are model-agnostic:

* :class:`PseudoLabelCache` holds ``(batch, pseudo_labels)`` entries; the
  entries are swept in a shuffled order (a new permutation for every sweep), and
  after an entry is used it is replaced, with probability ``p``, by a new
  unlabelled batch labelled by the current model.
* :class:`SlimIplSchedule` holds the phases (supervised warm-up, cropping
  warm-up) and the mix: groups of one labelled and ``lambda_`` unlabelled
  updates, each group in a random order.
* :class:`SlimIpl` drives both: ``next_batch(update)`` returns the batch to
  train on and its pseudo-labels (``None`` for labelled data).

As in flashlight's slimIPL recipe ("fixed-pre-cache"): after the supervised
warm-up, updates come in shuffled groups of 1 + lambda; while the cache is not
full, an unlabelled slot labels one new batch into the cache and trains on
nothing (kind ``"fill"``: the update counter and the learning-rate schedule still
advance), so the cache holds labels of the model of its time, not of a model
trained on its own fresh labels.

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
FILL = "fill"  # an update that only labels a batch into the cache

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

    def permutation(self, n: int) -> List[int]:
        if isinstance(self._gen, torch.Generator):
            return torch.randperm(n, generator=self._gen).tolist()
        order = list(range(n))
        self._gen.shuffle(order)
        return order

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
        self._order: List[int] = []  # the current sweep's remaining entry indices

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
        """The next entry of the current sweep (the entry stays in the cache); every entry is used once per sweep,
        and each sweep has a new random order."""
        if not self._entries:
            raise RuntimeError("cannot sample from an empty pseudo-label cache")
        if not self._order:
            self._order = self._rng.permutation(len(self._entries))
        index = self._order.pop(0)
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
            "order": list(self._order),
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
        self._order = [int(i) for i in state.get("order", [])]


@dataclass(frozen=True)
class SlimIplSchedule:
    """The phases of a slimIPL run, by update index ``k`` (0-based).

    * ``k < warmup_updates``: supervised only (labelled batch).
    * after that, groups of ``1 + lambda_`` updates, one labelled and ``lambda_`` unlabelled in a random order
      (``lambda_ = 0``: labelled only); unlabelled slots fill the cache first (see :class:`SlimIpl`).
    * ``use_cropping(k)``: true for the first ``crop_updates`` updates of pseudo-label generation, i.e.
      ``warmup_updates <= k < warmup_updates + crop_updates``.
    """

    warmup_updates: int
    lambda_: int = 10
    crop_updates: int = 0

    def __post_init__(self) -> None:
        for name in ("warmup_updates", "lambda_", "crop_updates"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")

    def is_supervised(self, update: int) -> bool:
        return update < self.warmup_updates

    def group(self) -> List[str]:
        """The slots of one group, in canonical order (the driver shuffles them)."""
        return [LABELLED] + [UNLABELLED] * self.lambda_

    def use_cropping(self, update: int) -> bool:
        return self.warmup_updates <= update < self.warmup_updates + self.crop_updates


class SlimIpl:
    """Chooses every update's batch according to a :class:`SlimIplSchedule`.

    ``next_batch(update)`` must be called once per update with consecutive
    indices starting at 0 (or at the saved position after
    :meth:`load_state_dict`). Data iterators are consumed in order; to resume,
    pass iterators positioned after ``labelled_batches`` / ``unlabelled_batches``
    of the saved state (e.g. through the samplers' own state). ``generator``
    orders the slots of each group.
    """

    def __init__(
        self,
        schedule: SlimIplSchedule,
        cache: PseudoLabelCache,
        label_fn: LabelFn,
        labelled_iter: Iterable[Any],
        unlabelled_iter: Iterable[Any],
        generator: Optional[Generator] = None,
    ):
        self.schedule = schedule
        self.cache = cache
        self.label_fn = label_fn
        self._labelled = iter(labelled_iter)
        self._unlabelled = iter(unlabelled_iter)
        self._order_rng = _RandomSource(generator if generator is not None else random.Random(0))
        self._group: List[str] = []
        self._next_update = 0
        self.labelled_batches = 0
        self.unlabelled_batches = 0
        self.num_replacements = 0
        self.mix_start: Optional[int] = None  # the first update that trained on a cached batch

    def next_batch(self, update: int) -> Tuple[Any, Optional[Any], str]:
        """``(batch, pseudo_labels or None, kind)`` for this update; kind is "labelled", "unlabelled", or "fill"
        (the update labelled a batch into the cache and has nothing to train on: batch and labels are None)."""
        if update != self._next_update:
            raise ValueError(f"expected update {self._next_update}, got {update}")
        self._next_update += 1
        self._log_transitions(update)

        if self.schedule.is_supervised(update) or self._next_slot() == LABELLED:
            self.labelled_batches += 1
            return next(self._labelled), None, LABELLED
        if not self.cache.is_full:
            self.cache.add(self._label_new(update))
            if self.cache.is_full:
                logger.info("slimIPL: the cache is full (%d entries) after update %d", self.cache.size, update)
            return None, None, FILL
        if self.mix_start is None:
            self.mix_start = update
            logger.info("slimIPL: update %d starts mixing (lambda=%d)", update, self.schedule.lambda_)
        index, entry = self.cache.sample()
        if self.cache.maybe_replace(index, lambda: self._label_new(update)):
            self.num_replacements += 1
        return entry.batch, entry.labels, UNLABELLED

    def _next_slot(self) -> str:
        if not self._group:
            canonical = self.schedule.group()
            self._group = [canonical[i] for i in self._order_rng.permutation(len(canonical))]
        return self._group.pop(0)

    def _label_new(self, update: int) -> CacheEntry:
        batch = next(self._unlabelled)
        self.unlabelled_batches += 1
        return CacheEntry(batch, self.label_fn(batch, self.schedule.use_cropping(update)))

    def _log_transitions(self, update: int) -> None:
        schedule = self.schedule
        if update == schedule.warmup_updates and schedule.lambda_:
            logger.info("slimIPL: update %d starts filling the cache (%d entries)", update, self.cache.size)
        if schedule.crop_updates and update == schedule.warmup_updates + schedule.crop_updates:
            logger.info("slimIPL: update %d ends the cropping warm-up", update)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "next_update": self._next_update,
            "labelled_batches": self.labelled_batches,
            "unlabelled_batches": self.unlabelled_batches,
            "num_replacements": self.num_replacements,
            "mix_start": self.mix_start,
            "group": list(self._group),
            "order_rng": self._order_rng.state(),
            "cache": self.cache.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.cache.load_state_dict(state["cache"])
        self._next_update = state["next_update"]
        self.labelled_batches = state["labelled_batches"]
        self.unlabelled_batches = state["unlabelled_batches"]
        self.num_replacements = state["num_replacements"]
        self.mix_start = state.get("mix_start")
        self._group = list(state.get("group", []))
        if "order_rng" in state:
            self._order_rng.set_state(state["order_rng"])
