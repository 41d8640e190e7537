"""Tests of ScaledAdam and Eden against the formulas of the Zipformer paper and
plain Adam arithmetic."""

import io

import pytest
import torch

from icefall_ext.train.optim import Eden, ScaledAdam


def _eden_formula(base_lr, batch, epoch, lr_batches, lr_epochs, warmup_batches):
    warmup = 1.0 if batch >= warmup_batches else 0.5 + 0.5 * batch / warmup_batches
    return (
        base_lr
        * ((batch**2 + lr_batches**2) / lr_batches**2) ** -0.25
        * ((epoch**2 + lr_epochs**2) / lr_epochs**2) ** -0.25
        * warmup
    )


def test_eden_follows_formula():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = ScaledAdam([p], lr=0.045)
    sched = Eden(opt, lr_batches=7500, lr_epochs=3.5, warmup_batches=500)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.045 * 0.5)
    for epoch in (0, 1, 3.5, 10):
        sched.step_epoch(epoch)
        for batch in (0, 1, 250, 499, 500, 7500, 100000):
            sched.step_batch(batch)
            expected = _eden_formula(0.045, batch, epoch, 7500, 3.5, 500)
            assert sched.get_last_lr()[0] == pytest.approx(expected, rel=1e-12)
    sched.step_batch()
    assert sched.batch == 100001


def test_eden_state_dict_restores_learning_rate():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = ScaledAdam([p], lr=0.03)
    sched = Eden(opt, lr_batches=100, lr_epochs=2)
    sched.step_epoch(3)
    for _ in range(123):
        sched.step_batch()
    restored = Eden(ScaledAdam([torch.nn.Parameter(torch.zeros(3))], lr=0.03), 100, 2)
    restored.load_state_dict(sched.state_dict())
    assert restored.get_last_lr() == sched.get_last_lr()
    assert restored.get_last_lr()[0] == pytest.approx(_eden_formula(0.03, 123, 3, 100, 2, 500))


def test_first_step_is_relative_to_parameter_rms():
    torch.manual_seed(0)
    w = torch.randn(4, 5)
    small = torch.nn.Parameter(w.clone())
    large = torch.nn.Parameter(10 * w.clone())
    grad = torch.randn(4, 5)
    opt = ScaledAdam([small, large], lr=0.05, betas=(0.9, 0.98))
    small.grad, large.grad = grad.clone(), grad.clone()
    opt.step()
    # bias-corrected Adam on the first step gives grad / |grad|; ScaledAdam multiplies it
    # by the tensor's RMS, and the momentum update contributes (1 - beta1) of it
    for param, orig in ((small, w), (large, 10 * w)):
        rms = orig.pow(2).mean().sqrt()
        expected = orig - 0.05 * 0.1 * rms * grad / (grad.abs() + 1e-8)
        torch.testing.assert_close(param.detach(), expected)


def test_scale_update_speeds_up_shrinking():
    # loss 0.5 * |p|^2: the gradient is parallel to p, so the learned scale shrinks it
    torch.manual_seed(1)
    init = torch.randn(16, 16)
    rms = {}
    for scalar_lr_scale in (0.0, 0.1):
        p = torch.nn.Parameter(init.clone())
        opt = ScaledAdam([p], lr=0.02, scalar_lr_scale=scalar_lr_scale)
        for _ in range(40):
            p.grad = p.detach().clone()
            opt.step()
        rms[scalar_lr_scale] = p.detach().pow(2).mean().sqrt().item()
    assert rms[0.0] < 0.9 * init.pow(2).mean().sqrt().item()
    # 10 scale updates, each shrinking by at most lr * scalar_lr_scale * size_update_period
    assert (1 - 0.02 * 0.1 * 4) ** 10 <= rms[0.1] / rms[0.0] < 0.97


def test_clipping_scales_a_gradient_spike_to_the_median_norm():
    torch.manual_seed(2)
    init = torch.randn(6, 7)
    grad = torch.randn(6, 7)
    spike_step = 13

    def run(clipping_scale, spike_grad):
        p = torch.nn.Parameter(init.clone())
        # size updates switched off so that the RMS, and so every norm, stays constant
        opt = ScaledAdam(
            [p], lr=0.01, clipping_scale=clipping_scale,
            size_update_period=1000, clipping_update_period=8,
        )
        for step in range(spike_step + 3):
            p.grad = spike_grad.clone() if step == spike_step else grad.clone()
            opt.step()
        return p.detach()

    clipped = run(2.0, 1.0e4 * grad)
    # the same run without clipping, given the spike already scaled to 2x the median norm
    reference = run(None, 2.0 * grad)
    unclipped = run(None, 1.0e4 * grad)
    torch.testing.assert_close(clipped, reference)
    assert not torch.allclose(clipped, unclipped)


def test_non_finite_gradient_is_skipped():
    p = torch.nn.Parameter(torch.randn(3, 3))
    opt = ScaledAdam([p], lr=0.01, clipping_scale=2.0)
    for _ in range(3):
        p.grad = torch.randn(3, 3)
        opt.step()
    p.grad = torch.full((3, 3), float("nan"))
    opt.step()
    assert torch.isfinite(p).all()


def test_parameters_without_gradient_are_not_changed():
    frozen = torch.nn.Parameter(torch.randn(4, 4))
    trained = torch.nn.Parameter(torch.randn(4, 4))
    before = frozen.detach().clone()
    opt = ScaledAdam([frozen, trained], lr=0.05)
    for step in range(6):
        trained.grad = torch.randn(4, 4)
        frozen.grad = torch.randn(4, 4) if step < 2 else None
        opt.step()
        if step == 1:
            before = frozen.detach().clone()
    assert torch.equal(frozen.detach(), before)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 8)
        self.b = torch.nn.Linear(8, 8)
        self.c = torch.nn.Linear(8, 1)
        self.gain = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.c(torch.tanh(self.b(h))) * self.gain


def _train(model, opt, sched, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=gen)
        y = x.sum(dim=1, keepdim=True)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step_batch()


def _make(model):
    opt = ScaledAdam(
        model.named_parameters(), lr=0.05, clipping_scale=2.0, clipping_update_period=8
    )
    return opt, Eden(opt, lr_batches=20, lr_epochs=2, warmup_batches=5)


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(3)
    model = _Net()
    opt, sched = _make(model)
    _train(model, opt, sched, steps=11, seed=10)

    buf = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf
    )
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    _train(model, opt, sched, steps=13, seed=11)

    torch.manual_seed(99)  # a differently initialised model, overwritten by the checkpoint
    resumed = _Net()
    resumed.load_state_dict(saved["model"])
    opt2, sched2 = _make(resumed)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    _train(resumed, opt2, sched2, steps=13, seed=11)

    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert sched.get_last_lr() == sched2.get_last_lr()
