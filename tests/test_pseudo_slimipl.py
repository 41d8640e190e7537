"""slimIPL cache, schedule and driver: decisions, statistics, label freshness, exact resume, and a toy that learns."""

import io
import itertools
import math
import random

import pytest
import torch

from icefall_ext.pseudo.slimipl import (
    LABELLED,
    UNLABELLED,
    PseudoLabelCache,
    SlimIpl,
    SlimIplSchedule,
)

_GENERATORS = [lambda: random.Random(11), lambda: torch.Generator().manual_seed(11)]


def _reference_kinds(warmup: int, fill: int, lambda_: int, num_updates: int):
    """Independent construction of the update pattern by concatenation."""
    kinds = [LABELLED] * (warmup + fill)
    group = [LABELLED] + [UNLABELLED] * lambda_
    while len(kinds) < num_updates:
        kinds.extend(group)
    return kinds[:num_updates]


class _ToyRun:
    """Integer batches, a label_fn that records the 'model version' (number of finished updates) and crop flag."""

    def __init__(self, schedule, cache, labelled_start=0, unlabelled_start=0):
        self.version = 0
        self.calls = []  # (version, batch, crop)
        self.driver = SlimIpl(
            schedule,
            cache,
            self.label_fn,
            itertools.count(labelled_start),
            (1_000_000 + i for i in itertools.count(unlabelled_start)),
        )

    def label_fn(self, batch, crop):
        self.calls.append((self.version, batch, crop))
        return (batch, self.version, crop)

    def run(self, first_update, num_updates):
        out = []
        for update in range(first_update, first_update + num_updates):
            self.version = update
            out.append(self.driver.next_batch(update))
            assert len(self.driver.cache) <= self.driver.cache.size
        return out


@pytest.mark.parametrize("warmup,fill,lambda_", [(0, 1, 0), (3, 4, 1), (5, 7, 10), (2, 3, 4)])
def test_schedule_matches_reference_pattern(warmup, fill, lambda_):
    schedule = SlimIplSchedule(warmup_updates=warmup, fill_updates=fill, lambda_=lambda_, crop_updates=6)
    reference = _reference_kinds(warmup, fill, lambda_, 200)
    assert [LABELLED if schedule.is_labelled(k) else UNLABELLED for k in range(200)] == reference
    assert [schedule.fills_cache(k) for k in range(200)] == [warmup <= k < warmup + fill for k in range(200)]
    assert [schedule.use_cropping(k) for k in range(200)] == [warmup <= k < warmup + 6 for k in range(200)]


@pytest.mark.parametrize("lambda_", [0, 1, 3, 10])
def test_driver_follows_schedule_and_bounds_cache(lambda_):
    warmup, fill, updates = 6, 5, 6 + 5 + 11 * 20
    schedule = SlimIplSchedule(warmup_updates=warmup, fill_updates=fill, lambda_=lambda_)
    run = _ToyRun(schedule, PseudoLabelCache(fill, 0.3, random.Random(1)))
    results = run.run(0, updates)
    kinds = [kind for _, _, kind in results]
    assert kinds == _reference_kinds(warmup, fill, lambda_, updates)
    mixing = kinds[warmup + fill :]
    assert mixing.count(LABELLED) * (lambda_ + 1) == len(mixing)  # 220 updates = whole groups for these lambdas
    # Labelled batches are consumed in order and carry no labels; unlabelled ones come from the cache.
    assert [b for b, labels, k in results if k == LABELLED] == list(range(kinds.count(LABELLED)))
    assert all(labels is None for _, labels, k in results if k == LABELLED)
    assert all(b >= 1_000_000 and labels[0] == b for b, labels, k in results if k == UNLABELLED)
    assert run.driver.cache.is_full
    assert len(run.calls) == fill + run.driver.num_replacements == run.driver.unlabelled_batches


def test_cache_fills_before_mixing():
    schedule = SlimIplSchedule(warmup_updates=4, fill_updates=3, lambda_=2)
    run = _ToyRun(schedule, PseudoLabelCache(3, 0.5, random.Random(0)))
    sizes = []
    for update in range(12):
        run.run(update, 1)
        sizes.append(len(run.driver.cache))
    assert sizes == [0, 0, 0, 0, 1, 2, 3, 3, 3, 3, 3, 3]
    assert [version for version, _, _ in run.calls[:3]] == [4, 5, 6]


@pytest.mark.parametrize("make_gen", _GENERATORS, ids=["python", "torch"])
def test_replacement_frequency_is_binomial(make_gen):
    p, n = 0.1, 20_000
    cache = PseudoLabelCache(50, p, make_gen())
    for i in range(50):
        cache.add((i, i))
    made = []

    def make_entry():
        made.append(len(made))
        return (-1, -1)

    replaced = sum(cache.maybe_replace(cache.sample()[0], make_entry) for _ in range(n))
    assert replaced == len(made)  # the labeller runs only when an entry is replaced
    assert abs(replaced - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_sampling_is_uniform():
    size, n = 10, 20_000
    cache = PseudoLabelCache(size, 0.0, torch.Generator().manual_seed(7))
    for i in range(size):
        cache.add((i, None))
    counts = [0] * size
    for _ in range(n):
        index, entry = cache.sample()
        assert entry.batch == index
        counts[index] += 1
    chi2 = sum((c - n / size) ** 2 / (n / size) for c in counts)
    assert chi2 < 27.88  # 99.9% quantile of chi-square with 9 degrees of freedom


def test_cached_labels_come_from_model_at_labelling_time():
    schedule = SlimIplSchedule(warmup_updates=3, fill_updates=8, lambda_=4)
    run = _ToyRun(schedule, PseudoLabelCache(8, 0.2, random.Random(5)))
    results = run.run(0, 400)
    labelled_at = {batch: version for version, batch, _ in run.calls}
    stale = 0
    for update, (batch, labels, kind) in enumerate(results):
        if kind != UNLABELLED:
            continue
        _, version, _ = labels
        assert version == labelled_at[batch] and version <= update
        stale += version < update
    assert stale > 0  # cached labels are reused, not regenerated on every sample
    # Every labelling call happened with the model of the update during which it ran.
    mix_calls = [(version, batch) for version, batch, _ in run.calls if version >= schedule.mix_start]
    assert len(mix_calls) == run.driver.num_replacements > 0


def test_cropping_flag_only_during_warmup_of_pl_generation():
    warmup, fill, crop = 4, 6, 15
    schedule = SlimIplSchedule(warmup_updates=warmup, fill_updates=fill, lambda_=1, crop_updates=crop)
    run = _ToyRun(schedule, PseudoLabelCache(fill, 0.5, random.Random(2)))
    run.run(0, 200)
    assert all(crop_flag == (version < warmup + crop) for version, _, crop_flag in run.calls)
    assert {flag for _, _, flag in run.calls} == {True, False}
    assert any(v >= schedule.mix_start and flag for v, _, flag in run.calls)  # cropping continues into mixing


@pytest.mark.parametrize("make_gen", _GENERATORS, ids=["python", "torch"])
def test_exact_resume_through_state_dict(make_gen):
    schedule = SlimIplSchedule(warmup_updates=5, fill_updates=10, lambda_=3, crop_updates=20)

    run_a = _ToyRun(schedule, PseudoLabelCache(10, 0.3, make_gen()))
    full = run_a.run(0, 100)

    run_b = _ToyRun(schedule, PseudoLabelCache(10, 0.3, make_gen()))
    first = run_b.run(0, 50)
    buffer = io.BytesIO()
    torch.save(run_b.driver.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    other_gen = random.Random(999) if isinstance(make_gen(), random.Random) else torch.Generator().manual_seed(999)
    run_c = _ToyRun(
        schedule,
        PseudoLabelCache(10, 0.3, other_gen),
        labelled_start=state["labelled_batches"],
        unlabelled_start=state["unlabelled_batches"],
    )
    run_c.driver.load_state_dict(state)
    second = run_c.run(50, 50)
    assert first + second == full
    assert run_c.driver.num_replacements == run_a.driver.num_replacements

    run_d = _ToyRun(schedule, PseudoLabelCache(10, 0.3, make_gen()))
    assert run_d.run(0, 100) == full  # determinism for a fixed seed


def test_misuse_is_rejected():
    with pytest.raises(ValueError):
        SlimIpl(SlimIplSchedule(0, 3), PseudoLabelCache(4, 0.1, random.Random(0)), lambda b, c: b, [], [])
    run = _ToyRun(SlimIplSchedule(0, 2), PseudoLabelCache(2, 0.1, random.Random(0)))
    with pytest.raises(ValueError, match="expected update 0"):
        run.driver.next_batch(1)
    cache = PseudoLabelCache(1, 0.1, random.Random(0))
    with pytest.raises(RuntimeError):
        cache.sample()
    cache.add((1, 2))
    with pytest.raises(RuntimeError):
        cache.add((3, 4))
    with pytest.raises(ValueError):
        PseudoLabelCache(2, 0.1, random.Random(0)).load_state_dict(cache.state_dict())
    with pytest.raises(ValueError):
        PseudoLabelCache(1, 0.1, torch.Generator()).load_state_dict(cache.state_dict())


# ---- toy end-to-end: pseudo-labels on unlabelled data improve a linear classifier ----


def _gaussian_pair(n: int, gen: torch.Generator):
    """Two unit-variance Gaussians at (-2, 0) (token 0) and (2, 0) (token 1)."""
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 2, generator=gen)
    x[:, 0] += torch.where(y == 1, 2.0, -2.0)
    return x, y


def _minibatches(x: torch.Tensor, batch_size: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            yield order[i : i + batch_size]


def _train_toy(lambda_: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    # Four labelled points placed so that their max-margin line is tilted by ~60 degrees from the true one.
    x_lab = torch.tensor([[-1.0, 1.7], [-1.2, 2.0], [1.0, -1.7], [1.2, -2.0]])
    y_lab = torch.tensor([0, 0, 1, 1])
    x_unlab, _ = _gaussian_pair(4000, gen)
    x_test, y_test = _gaussian_pair(2000, gen)

    torch.manual_seed(seed)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=1e-2)

    def label_fn(batch: torch.Tensor, crop: bool) -> torch.Tensor:
        with torch.no_grad():
            return model(batch).argmax(dim=-1)  # greedy "tokens"

    labelled = ((x_lab, y_lab) for _ in itertools.count())
    unlabelled = (x_unlab[idx] for idx in _minibatches(x_unlab, 64, seed))
    schedule = SlimIplSchedule(warmup_updates=100, fill_updates=10, lambda_=lambda_)
    driver = SlimIpl(schedule, PseudoLabelCache(10, 0.5, random.Random(seed)), label_fn, labelled, unlabelled)
    for update in range(600):
        batch, labels, kind = driver.next_batch(update)
        x, y = batch if kind == LABELLED else (batch, labels)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (model(x_test).argmax(dim=-1) == y_test).float().mean().item()


def test_toy_slimipl_learns_from_pseudo_labels():
    supervised = _train_toy(lambda_=0, seed=0)  # same number of updates, labelled data only
    semi_supervised = _train_toy(lambda_=3, seed=0)
    # Bayes accuracy is Phi(2) = 0.977; the labelled points alone give a tilted boundary (~0.84).
    assert supervised < 0.9
    assert semi_supervised > 0.95
    assert semi_supervised - supervised > 0.08
