"""slimIPL cache, schedule and driver: decisions, statistics, label freshness, exact resume, and a toy that learns."""

import io
import itertools
import math
import random

import pytest
import torch

from icefall_ext.pseudo.slimipl import (
    FILL,
    LABELLED,
    UNLABELLED,
    PseudoLabelCache,
    SlimIpl,
    SlimIplSchedule,
)

_GENERATORS = [lambda: random.Random(11), lambda: torch.Generator().manual_seed(11)]


class _ToyRun:
    """Integer batches, a label_fn that records the 'model version' (number of finished updates) and crop flag."""

    def __init__(self, schedule, cache, labelled_start=0, unlabelled_start=0, order_seed=0):
        self.version = 0
        self.calls = []  # (version, batch, crop)
        self.driver = SlimIpl(
            schedule,
            cache,
            self.label_fn,
            itertools.count(labelled_start),
            (1_000_000 + i for i in itertools.count(unlabelled_start)),
            random.Random(order_seed),
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


@pytest.mark.parametrize("warmup,size,lambda_", [(0, 1, 1), (3, 4, 1), (5, 7, 10), (2, 3, 4)])
def test_groups_of_one_labelled_and_lambda_unlabelled_in_random_order(warmup, size, lambda_):
    run = _ToyRun(SlimIplSchedule(warmup_updates=warmup, lambda_=lambda_), PseudoLabelCache(size, 0.3,
                                                                                             random.Random(1)))
    groups = 300
    kinds = [kind for _, _, kind in run.run(0, warmup + groups * (lambda_ + 1))]
    assert kinds[:warmup] == [LABELLED] * warmup
    slots = [LABELLED if k == LABELLED else UNLABELLED for k in kinds[warmup:]]  # a fill slot is an unlabelled one
    positions = []
    for g in range(groups):
        group = slots[g * (lambda_ + 1) : (g + 1) * (lambda_ + 1)]
        assert group.count(LABELLED) == 1
        positions.append(group.index(LABELLED))
    # the labelled slot is anywhere in its group, uniformly (chi-square, 99.9% quantile for up to 10 dof: 29.6)
    expected = groups / (lambda_ + 1)
    chi2 = sum((positions.count(i) - expected) ** 2 / expected for i in range(lambda_ + 1))
    assert chi2 < 29.6 and len(set(positions)) == lambda_ + 1


def test_lambda_zero_is_supervised_only():
    run = _ToyRun(SlimIplSchedule(warmup_updates=2, lambda_=0), PseudoLabelCache(3, 0.5, random.Random(0)))
    assert {kind for _, _, kind in run.run(0, 50)} == {LABELLED} and not run.calls


def test_cache_fills_before_mixing_and_fill_updates_train_nothing():
    run = _ToyRun(SlimIplSchedule(warmup_updates=4, lambda_=2), PseudoLabelCache(3, 0.5, random.Random(0)))
    sizes, results = [], []
    for update in range(30):
        results += run.run(update, 1)
        sizes.append(len(run.driver.cache))
    kinds = [kind for _, _, kind in results]
    assert sizes[:4] == [0, 0, 0, 0] and max(sizes) == 3
    fills = [k for k, kind in enumerate(kinds) if kind == FILL]
    assert len(fills) == 3 and all(results[k][:2] == (None, None) for k in fills)  # nothing to train on
    assert [sizes[k] for k in fills] == [1, 2, 3]
    first_mix = kinds.index(UNLABELLED)
    assert first_mix > fills[-1] == run.driver.mix_start - 1 or first_mix == run.driver.mix_start
    assert [version for version, _, _ in run.calls[:3]] == fills  # labelled by the model of the fill update


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


@pytest.mark.parametrize("make_gen", _GENERATORS, ids=["python", "torch"])
def test_cache_is_swept_in_a_new_random_order_each_time(make_gen):
    size = 10
    cache = PseudoLabelCache(size, 0.0, make_gen())
    for i in range(size):
        cache.add((i, None))
    sweeps = []
    for _ in range(50):
        sweep = []
        for _ in range(size):
            index, entry = cache.sample()
            assert entry.batch == index
            sweep.append(index)
        sweeps.append(sweep)
    assert all(sorted(sweep) == list(range(size)) for sweep in sweeps)  # every entry once per sweep
    assert len({tuple(sweep) for sweep in sweeps}) > 45  # and a new order each time
    first = [sweep[0] for sweep in sweeps]
    assert len(set(first)) >= 8  # not a fixed starting point


def test_cached_labels_come_from_model_at_labelling_time():
    run = _ToyRun(SlimIplSchedule(warmup_updates=3, lambda_=4), PseudoLabelCache(8, 0.2, random.Random(5)))
    results = run.run(0, 400)
    labelled_at = {batch: version for version, batch, _ in run.calls}
    stale = 0
    for update, (batch, labels, kind) in enumerate(results):
        if kind != UNLABELLED:
            continue
        _, version, _ = labels
        assert version == labelled_at[batch] and version < update
        stale += version < update - 1
    assert stale > 0  # cached labels are reused, not regenerated on every sample
    mix_calls = [(version, batch) for version, batch, _ in run.calls if version >= run.driver.mix_start]
    assert len(mix_calls) == run.driver.num_replacements > 0
    assert len(run.calls) == 8 + run.driver.num_replacements == run.driver.unlabelled_batches


def test_cropping_flag_only_during_warmup_of_pl_generation():
    warmup, crop = 4, 30
    schedule = SlimIplSchedule(warmup_updates=warmup, lambda_=1, crop_updates=crop)
    run = _ToyRun(schedule, PseudoLabelCache(6, 0.5, random.Random(2)))
    run.run(0, 200)
    assert all(crop_flag == (version < warmup + crop) for version, _, crop_flag in run.calls)
    assert {flag for _, _, flag in run.calls} == {True, False}
    assert any(v >= run.driver.mix_start and flag for v, _, flag in run.calls)  # cropping continues into mixing


@pytest.mark.parametrize("make_gen", _GENERATORS, ids=["python", "torch"])
def test_exact_resume_through_state_dict(make_gen):
    schedule = SlimIplSchedule(warmup_updates=5, lambda_=3, crop_updates=20)

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
        order_seed=12345,
    )
    run_c.driver.load_state_dict(state)
    second = run_c.run(50, 50)
    assert first + second == full
    assert run_c.driver.num_replacements == run_a.driver.num_replacements

    run_d = _ToyRun(schedule, PseudoLabelCache(10, 0.3, make_gen()))
    assert run_d.run(0, 100) == full  # determinism for a fixed seed


def test_misuse_is_rejected():
    run = _ToyRun(SlimIplSchedule(0, 2), PseudoLabelCache(2, 0.1, random.Random(0)))
    with pytest.raises(ValueError, match="expected update 0"):
        run.driver.next_batch(1)
    with pytest.raises(ValueError):
        SlimIplSchedule(warmup_updates=-1)
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
    schedule = SlimIplSchedule(warmup_updates=100, lambda_=lambda_)
    driver = SlimIpl(schedule, PseudoLabelCache(10, 0.5, random.Random(seed)), label_fn, labelled, unlabelled,
                     random.Random(seed))
    for update in range(600):
        batch, labels, kind = driver.next_batch(update)
        if kind == FILL:
            continue
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
