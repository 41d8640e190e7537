"""BEST-RQ's quantiser, masking and loss, against brute force and known expectations."""

import io

import numpy as np
import pytest
import torch

from icefall_ext.pretrain.best_rq import (
    BestRq,
    RandomProjectionQuantizer,
    expected_masked_fraction,
    span_mask,
    stack_frames,
)


def brute_force_labels(q: RandomProjectionQuantizer, z: np.ndarray) -> np.ndarray:
    """Nearest codeword by Euclidean distance to already normalised vectors, every other step done with numpy."""
    p = z @ q.projection.double().numpy()
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    c = q.codebook.double().numpy()
    c = c / np.linalg.norm(c, axis=-1, keepdims=True)
    d = ((p[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return d.argmin(-1)


def numpy_per_utterance(x: np.ndarray, n: int) -> np.ndarray:
    """Each feature dimension of the first ``n`` frames to mean 0 / std 1 over those frames."""
    v = x[:n]
    return (v - v.mean(0)) / np.sqrt(v.var(0) + 1e-5)


@pytest.mark.parametrize("norm", ["utterance", "vector"])
def test_labels_are_the_nearest_codeword(norm):
    torch.manual_seed(0)
    rq = BestRq(feature_dim=20, encoder_dim=8, stack=4, num_codebooks=2, num_codes=512, norm=norm)
    x = torch.randn(3, 50, 20) * 3 + torch.linspace(-4, 4, 20)
    x_lens = [50, 41, 12]
    labels, lens = rq.targets(x, torch.tensor(x_lens))
    assert lens.tolist() == [12, 10, 3]
    xd = x.double().numpy()
    for q, got in zip(rq.quantizers, labels):
        for i, n in enumerate(x_lens):
            groups = n // 4
            if norm == "utterance":
                z = numpy_per_utterance(xd[i], n)[: groups * 4].reshape(groups, 80)
            else:
                v = xd[i, : groups * 4].reshape(groups, 80)
                z = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5)
            want = brute_force_labels(q, z)
            assert (got[i, :groups].numpy() == want).mean() >= 0.999  # ties at float precision aside
    assert not torch.equal(labels[0], labels[1])  # independent quantisers


def test_quantiser_is_frozen_and_outside_the_optimiser():
    rq = BestRq(feature_dim=10, encoder_dim=8, num_codebooks=3, num_codes=64)
    names = {n for n, _ in rq.named_parameters()}
    assert all(n.startswith("heads.") for n in names)
    buffers = {n for n, _ in rq.named_buffers()}
    assert {f"quantizers.{k}.{b}" for k in range(3) for b in ("projection", "codebook")} == buffers
    optimizer = torch.optim.AdamW(rq.parameters(), lr=1.0, weight_decay=0.5)
    before = [b.clone() for b in rq.buffers()]
    encoder = torch.nn.Linear(10, 8)
    loss = rq(lambda x, lens: (encoder(x[:, ::4]), lens // 4), torch.randn(2, 400, 10),
              torch.tensor([400, 300]))["bestrq"]
    loss.backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, rq.buffers()))
    assert all(b.grad is None for b in rq.buffers())


def test_utterance_normalisation_ignores_padding_and_keeps_pauses_together():
    """An utterance's labels do not depend on the batch it is padded in, nor on a per-dimension gain/offset of the
    whole utterance (a recording level); frames of a pause (flat spectrum up to dither) share few codes, whereas a
    per-vector normalisation turns the dither into random codes."""
    torch.manual_seed(1)
    feat, t = 20, 240
    speech = torch.randn(t, feat) * 2 + torch.linspace(-3, 3, feat)
    speech[100:200] = -15.0 + 0.01 * torch.randn(100, feat)  # a pause: log-mel floor plus dither
    rq = BestRq(feature_dim=feat, encoder_dim=4, num_codes=256, seed=3)
    (alone,), _ = rq.targets(speech[None], torch.tensor([t]))
    padded = torch.cat([torch.stack([speech, torch.full((t, feat), 7.0)]), torch.zeros(2, 60, feat)], 1)
    (batched,), _ = rq.targets(padded, torch.tensor([t, 300]))
    assert torch.equal(alone[0], batched[0, : t // 4])
    (scaled,), _ = rq.targets((speech * torch.linspace(0.5, 2, feat) + 3)[None], torch.tensor([t]))
    assert (scaled == alone).float().mean() >= 0.99
    pause = slice(26, 49)  # stacked groups wholly inside frames 100..199
    assert alone[0, pause].unique().numel() <= 3
    per_vector = BestRq(feature_dim=feat, encoder_dim=4, num_codes=256, seed=3, norm="vector")
    (noisy,), _ = per_vector.targets(speech[None], torch.tensor([t]))
    assert noisy[0, pause].unique().numel() >= 15


def test_vector_normalisation_is_per_frame_over_features_not_over_time():
    """With ``norm="vector"`` a frame's label depends on that stacked frame only (a time-axis normalisation would
    couple frames), and is unchanged by an affine change of its own values."""
    rq = BestRq(feature_dim=8, encoder_dim=4, num_codes=256, norm="vector")
    x = torch.randn(1, 40, 8)
    lens = torch.tensor([40])
    (base,), _ = rq.targets(x, lens)
    y = x.clone()
    y[:, 20:] = y[:, 20:] * 10 + 5  # other frames change a lot
    (other,), _ = rq.targets(y, lens)
    assert torch.equal(base[:, :5], other[:, :5])
    assert torch.equal(base[:, 5:], other[:, 5:])  # an affine change of a whole stacked frame keeps its label


def test_deterministic_given_the_seed_and_survives_a_checkpoint_round_trip():
    x, lens = torch.randn(2, 64, 12), torch.tensor([64, 50])
    a = BestRq(feature_dim=12, encoder_dim=4, num_codebooks=2, num_codes=128, seed=7)
    b = BestRq(feature_dim=12, encoder_dim=4, num_codebooks=2, num_codes=128, seed=7)
    c = BestRq(feature_dim=12, encoder_dim=4, num_codebooks=2, num_codes=128, seed=8)
    la, lb, lc = (m.targets(x, lens)[0] for m in (a, b, c))
    assert all(torch.equal(p, q) for p, q in zip(la, lb))
    assert not torch.equal(la[0], lc[0])
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    c.load_state_dict(torch.load(buffer, weights_only=True))
    assert all(torch.equal(p, q) for p, q in zip(la, c.targets(x, lens)[0]))


@pytest.mark.parametrize("prob,span", [(0.01, 40), (0.02, 20), (0.05, 10)])
def test_masked_fraction_matches_its_expectation(prob, span):
    g = torch.Generator().manual_seed(0)
    lens = torch.full((64,), 3000)
    mask = span_mask(lens, 3000, prob, span, g)
    observed = mask[:, span:].float().mean().item()  # past the first span every frame can be covered
    assert abs(observed - expected_masked_fraction(prob, span)) < 0.02


def test_masked_frames_carry_noise_and_the_rest_is_untouched():
    rq = BestRq(feature_dim=16, encoder_dim=4, num_codes=32, mask_prob=0.05, mask_frames=10, noise_std=0.1)
    x = torch.randn(4, 500, 16) * 5 + 20
    lens = torch.tensor([500, 400, 300, 120])
    masked, mask = rq.mask(x, lens, torch.Generator().manual_seed(1))
    assert torch.equal(masked[~mask], x[~mask])
    noise = masked[mask]
    assert noise.numel() > 1000 and abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 0.1) < 0.01
    frames = torch.arange(500)[None, :]
    assert not mask[frames >= lens[:, None]].any()  # nothing masked past an utterance's end


def test_gradient_reaches_the_encoder_only_at_masked_positions():
    rq = BestRq(feature_dim=8, encoder_dim=6, num_codes=32, mask_prob=0.05, mask_frames=8)
    captured = {}

    def encoder(x, lens):
        out = torch.randn(x.shape[0], x.shape[1] // 4, 6, requires_grad=True)
        captured["out"] = out
        return out, lens // 4

    lens = torch.tensor([400, 320])
    out = rq(encoder, torch.randn(2, 400, 8), lens, generator=torch.Generator().manual_seed(3))
    out["bestrq"].backward()
    grad = captured["out"].grad.abs().sum(-1)  # (N, T')
    _, mask = rq.mask(torch.zeros(2, 400, 8), lens, torch.Generator().manual_seed(3))
    groups = mask[:, :400].reshape(2, 100, 4).float().mean(-1) > 0.5
    assert (grad[~groups] == 0).all() and (grad[groups] > 0).all()
    assert out["num_masked"].item() == groups.sum().item()
    assert 0 < out["masked_fraction"].item() < 1


def test_stack_frames_groups_consecutive_frames():
    x = torch.arange(2 * 9 * 3, dtype=torch.float32).reshape(2, 9, 3)
    stacked, lens = stack_frames(x, torch.tensor([9, 6]), 4)
    assert stacked.shape == (2, 2, 12) and lens.tolist() == [2, 1]
    assert torch.equal(stacked[0, 1], x[0, 4:8].reshape(-1))


def test_pretraining_learns_and_fine_tuning_starts_from_the_encoder(tiny_corpus, tmp_path):
    """A tiny Conformer pre-trained with BEST-RQ on espeak-ng audio predicts masked codes far above chance with
    many codes in use; `train --init-from` then builds an ASR model whose encoder is the pre-trained one.
    (Per-vector targets: with the default per-utterance ones the pauses of these six short clips share one code that
    is ~50% of the masked groups from the start, so accuracy cannot show learning here; the mini FLEURS recipe
    shows it for the default.)"""
    import json
    import subprocess
    import sys

    from conftest import THREADS
    from icefall_ext.models.asr_model import AsrModel
    from icefall_ext.train.checkpoint import load_averaged_model, load_checkpoint

    common = ["--train-cuts", str(tiny_corpus["cuts"]), "--valid-cuts", str(tiny_corpus["cuts"]),
              "--preset", "conformer-tiny", "--max-duration", "100", "--num-epochs", "0", "--threads", THREADS,
              "--scheduler", "constant", "--warmup-updates", "10", "--log-every-n", "20", "--spec-augment", "false"]
    pre = tmp_path / "bestrq"
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.train", "--exp-dir", str(pre), "--pretrain", "best-rq",
                        "--bestrq-codebooks", "2", "--bestrq-num-codes", "256", "--bestrq-mask-prob", "0.04",
                        "--bestrq-mask-frames", "10", "--bestrq-norm", "vector", "--lr", "1e-2", "--max-updates", "300", "--valid-every-n", "50",
                        *common], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    points = [json.loads(line) for line in (pre / "valid.jsonl").read_text().splitlines()]
    first, last = points[0], points[-1]
    # chance is 1/256; after 50 updates the heads still predict little more than the commonest code
    assert last["accuracy"] > 0.25 and last["accuracy"] > 1.5 * first["accuracy"]
    assert min(last["codes_0"], last["codes_1"]) > 8
    assert 0.1 < last["masked_fraction"] < 0.6
    assert "masked accuracy" in r.stderr

    ft = tmp_path / "ctc"
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.train", "--exp-dir", str(ft), "--init-from", str(pre),
                        "--lang-dir", str(tiny_corpus["lang_dir"]), "--lr", "1e-3", "--max-updates", "2", *common],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    model, config, _ = load_averaged_model(ft)
    assert isinstance(model, AsrModel) and "pretrain" not in config and model.ctc is not None
    pre_state = load_checkpoint(next(pre.glob("epoch-*.pt")))["model"]
    assert any(k.startswith("best_rq.quantizers.") for k in pre_state)
    assert not any(k.startswith("best_rq") for k in model.state_dict())
    log = next((ft / "log").glob("log-train-*")).read_text()
    copied = int(log.split("initialised ")[1].split(" tensors")[0])
    assert copied == sum(1 for k in model.state_dict() if k.startswith("encoder."))
