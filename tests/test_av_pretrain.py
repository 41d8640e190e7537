"""Audio-visual pre-training (MAE + contrastive): InfoNCE against a brute-force computation, mask densities, MAE
losses only on masked positions, the video ViT's padding / patch conventions, and a tiny model that learns
audio->video retrieval on synthetic clips whose "mouth" follows the audio energy. Tensors only (no cuts)."""

import math

import numpy as np

import pytest
import torch

from icefall_ext.models.presets import build_model, model_config_from_preset
from icefall_ext.models.video_vit import VideoViT
from icefall_ext.pretrain.av_mae import AvPretrainModel, av_config, info_nce, masked_mse, random_mask
from icefall_ext.train.av_pretrain import retrieval


def tiny_av(frame_size=(16, 16), **settings) -> AvPretrainModel:
    cfg = model_config_from_preset("conformer-tiny", 0)
    cfg.update(pretrain="av", av=av_config("tiny", frame_size, **settings))
    return build_model(cfg)


def synthetic_clips(n: int, generator: torch.Generator, frames: int = 32, size: int = 16):
    """Paired clips: a random per-clip envelope (piecewise constant over 2-6 video frames) sets the fbank energy
    (4 frames per video frame) and how wide a dark "mouth" opens on a bright face; plus noise."""
    profile = torch.linspace(1.5, 0.5, 80)
    rows = torch.arange(size)[None, :, None]
    cols = torch.arange(size)[None, None, :]
    feats, videos = [], []
    for _ in range(n):
        env = []
        while len(env) < frames:
            env += [float(torch.rand((), generator=generator))] * int(torch.randint(2, 7, (), generator=generator))
        env = torch.tensor(env[:frames])
        energy = env.repeat_interleave(4)
        feats.append(-4 + 6 * energy[:, None] * profile[None] + 0.3 * torch.randn(4 * frames, 80, generator=generator))
        mouth = ((rows - size / 2).abs() < (env * size * 0.4)[:, None, None]) & ((cols - size / 2).abs() < size * 0.3)
        video = torch.where(mouth, 30.0, 170.0) + 10 * torch.randn(frames, size, size, generator=generator)
        videos.append(video.clamp(0, 255).to(torch.uint8))
    return torch.stack(feats), torch.full((n,), 4 * frames), torch.stack(videos), torch.full((n,), frames)


@pytest.mark.parametrize("form", ["standard", "paper"])
def test_info_nce_matches_a_brute_force_computation(form):
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 3, generator=g), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(5, 3, generator=g), dim=-1)
    tau = 0.3
    out = info_nce(a, v, tau, form)
    n = len(a)

    def s(i, k):
        return sum(float(a[i, d]) * float(v[k, d]) for d in range(3)) / tau

    def loss(direction):
        total = 0.0
        for i in range(n):
            denominator = 0.0
            for k in range(n):
                if form == "paper" and k == i:
                    continue
                denominator += math.exp(s(i, k) if direction == "a2v" else s(k, i))
            total += -math.log(math.exp(s(i, i)) / denominator)
        return total / n

    assert float(out["a2v"]) == pytest.approx(loss("a2v"), rel=1e-5)
    assert float(out["v2a"]) == pytest.approx(loss("v2a"), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(0.5 * (loss("a2v") + loss("v2a")), rel=1e-5)
    assert loss("a2v") != pytest.approx(loss("v2a"))  # the two directions differ: both are tested
    best = [max(range(n), key=lambda k: s(i, k)) for i in range(n)]
    assert float(out["a2v_acc"]) == pytest.approx(sum(b == i for i, b in enumerate(best)) / n)
    if form == "standard":  # the standard form is cross-entropy over the batch
        logits = a @ v.t() / tau
        ce = torch.nn.functional.cross_entropy(logits, torch.arange(n))
        assert float(out["a2v"]) == pytest.approx(float(ce), rel=1e-5)


def test_masked_fractions_match_the_targets():
    model = tiny_av(mask_prob=0.6, video_mask_prob=0.45)
    g = torch.Generator().manual_seed(1)
    audio_masked = audio_valid = video_masked = video_valid = 0
    for _ in range(200):
        feat_lens = torch.randint(8, 200, (4,), generator=g)
        video_lens = torch.randint(1, 50, (4,), generator=g)
        audio, video = model.draw_masks(feat_lens, int(feat_lens.max()), video_lens, 25, generator=g)
        valid_a = model.audio_valid(feat_lens, audio.shape[1])
        assert not (audio & ~valid_a).any()
        counts = audio.sum(1).double()
        want = valid_a.sum(1).double() * 0.6
        assert ((counts == want.floor()) | (counts == want.floor() + 1)).all()  # exact up to rounding
        tubelets = (video_lens // 2).clamp(max=25)
        assert not video[torch.arange(25)[None, :] >= tubelets[:, None]].any()
        audio_masked += int(audio.sum())
        audio_valid += int(valid_a.sum())
        video_masked += int(video.sum())
        video_valid += int(tubelets.sum()) * model.video_encoder.num_patches
    assert audio_masked / audio_valid == pytest.approx(0.6, abs=0.01)
    assert video_masked / video_valid == pytest.approx(0.45, abs=0.01)
    # rows with a single valid position are masked with probability p (stochastic rounding)
    single = random_mask(torch.ones(20000, 1, dtype=torch.bool), 0.3, torch.Generator().manual_seed(2))
    assert single.float().mean().item() == pytest.approx(0.3, abs=0.015)


def test_mae_losses_only_on_masked_positions():
    torch.manual_seed(0)
    model = tiny_av(mode="mae").eval()
    feats, lens, video, video_lens = synthetic_clips(2, torch.Generator().manual_seed(3))
    lens[1], video_lens[1] = 100, 25
    g = torch.Generator().manual_seed(4)
    audio_mask, video_mask = model.draw_masks(lens, feats.shape[1], video_lens, 16, generator=g)
    torch.manual_seed(5)
    with torch.no_grad():
        base = model(feats, lens, video, video_lens, audio_mask=audio_mask, video_mask=video_mask)
    audio_targets, video_targets = model.audio_targets, model.video_targets

    def run(audio_change=None, video_change=None):
        model.audio_targets = lambda x, x_lens: audio_targets(x, x_lens) + (audio_change if audio_change is not None
                                                                            else 0.0)
        model.video_targets = lambda p: video_targets(p) + (video_change if video_change is not None else 0.0)
        torch.manual_seed(5)  # the same noise in the masked frames
        try:
            with torch.no_grad():
                return model(feats, lens, video, video_lens, audio_mask=audio_mask, video_mask=video_mask)
        finally:
            del model.audio_targets, model.video_targets

    targets = audio_targets(feats, lens)
    change = torch.randn_like(targets) * 5
    change[:, : audio_mask.shape[1]][audio_mask] = 0.0
    out = run(audio_change=change)
    assert float(out["mae_audio"]) == pytest.approx(float(base["mae_audio"]), abs=1e-6)
    one = torch.zeros_like(targets)
    i, t = audio_mask.nonzero()[0].tolist()
    one[i, t] = 1.0
    assert abs(float(run(audio_change=one)["mae_audio"]) - float(base["mae_audio"])) > 1e-4

    pixels = model.video_encoder.prepare(video)
    change = torch.randn_like(video_targets(pixels)) * 5
    change[video_mask] = 0.0
    assert float(run(video_change=change)["mae_video"]) == pytest.approx(float(base["mae_video"]), abs=1e-6)
    one = torch.zeros_like(change)
    one[tuple(video_mask.nonzero()[0].tolist())] = 1.0
    assert abs(float(run(video_change=one)["mae_video"]) - float(base["mae_video"])) > 1e-4
    enc_lens = model.encoder.encoder_embed.output_lengths(lens)  # groups past the encoder output are not scored
    assert int(base["mae_audio_count"]) == sum(int(audio_mask[i, : int(n)].sum()) for i, n in enumerate(enc_lens))
    assert int(base["mae_video_count"]) == int(video_mask.sum())
    pred = torch.randn(3, 4, 5)
    total, count = masked_mse(pred, torch.zeros_like(pred), torch.tensor([[True, False, False, True]] * 3))
    assert count == 6 and float(total) == pytest.approx(float((pred[:, [0, 3]] ** 2).mean(-1).sum()))


def test_video_vit_ignores_padding_and_patch_order_matches_the_embedding():
    torch.manual_seed(0)
    vit = VideoViT((16, 16), dim=32, num_layers=2, num_heads=2).eval()
    g = torch.Generator().manual_seed(6)
    long = torch.randint(0, 256, (1, 14, 16, 16), generator=g, dtype=torch.uint8)
    short = torch.randint(0, 256, (1, 7, 16, 16), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        alone = vit(short, torch.tensor([7]))
        batch = torch.zeros(2, 14, 16, 16, dtype=torch.uint8)
        batch[0], batch[1, :7] = long[0], short[0]
        both = vit(batch, torch.tensor([14, 7]))
    assert alone.lens.tolist() == [3] and both.lens.tolist() == [7, 3]  # a tubelet needs all its frames
    torch.testing.assert_close(both.tokens[1, :3], alone.tokens[0, :3], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both.pooled[1], alone.pooled[0], rtol=1e-4, atol=1e-5)
    # patchify's order is the Conv3d's: the embedding equals a linear map of the patch vectors
    pixels = vit.prepare(long)
    patches = vit.patchify(pixels)
    conv = vit.patch_embed(pixels[:, None]).flatten(3).permute(0, 2, 3, 1)
    linear = patches @ vit.patch_embed.weight.reshape(32, -1).t() + vit.patch_embed.bias
    torch.testing.assert_close(conv, linear, rtol=1e-4, atol=1e-4)
    # frames of another size are resized to the ViT's
    with torch.no_grad():
        assert vit(torch.zeros(1, 4, 24, 40, dtype=torch.uint8), torch.tensor([4])).tokens.shape == (1, 2, 4, 32)


def test_clip_pixel_norm_keeps_only_the_motion():
    """pixel_norm="clip": against a numpy standardisation of each clip's valid frames; a clip with another still
    look (a fixed image added, the contrast halved) gets the same pixels and embedding; padding plays no part."""
    torch.manual_seed(0)
    vit = VideoViT((16, 16), dim=32, num_layers=1, num_heads=2, pixel_norm="clip").eval()
    g = torch.Generator().manual_seed(3)
    moving = torch.randint(0, 50, (10, 16, 16), generator=g) * 2  # even values: halving stays exact
    still = torch.randint(0, 100, (16, 16), generator=g)
    clip = moving.to(torch.uint8)
    other = (moving // 2 + still).to(torch.uint8)
    x = moving.double().numpy() / 255.0
    centred = x - x.mean(axis=0)
    expected = centred / (np.sqrt((centred ** 2).mean()) + 1e-3)
    padded = torch.zeros(2, 14, 16, 16, dtype=torch.uint8)
    padded[0, :10], padded[1, :10] = clip, other
    padded[:, 10:] = 255  # garbage after the end
    lens = torch.tensor([10, 10])
    pixels = vit.prepare(padded, lens)
    np.testing.assert_allclose(pixels[0, :10].double().numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pixels[1, :10], pixels[0, :10], rtol=0.03, atol=1e-3)  # the 1e-3 beside the std
    assert float(pixels[:, 10:].abs().max()) == 0.0
    with torch.no_grad():
        pooled = vit(padded, lens).pooled
        alone = vit(clip[None], torch.tensor([10])).pooled
    torch.testing.assert_close(pooled[1], pooled[0], rtol=0.03, atol=0.01)
    torch.testing.assert_close(alone[0], pooled[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        vit.prepare(padded)  # the lengths are needed


def test_batchnorm_clr_head_standardises_over_the_usable_clips():
    """clr_head="batchnorm": the projections see each pooled feature standardised over the batch's usable clips
    (a vector shared by every clip changes nothing; a clip without video neither), running statistics in eval."""
    torch.manual_seed(0)
    model = tiny_av(mode="clr", clr_head="batchnorm").train()
    g = torch.Generator().manual_seed(4)
    pooled_audio, pooled_video = torch.randn(5, 64, generator=g), torch.randn(5, 64, generator=g)
    usable = torch.tensor([True, True, False, True, True])
    out = model._standardise(model.clr_audio_norm, pooled_audio, usable)
    rows = pooled_audio[usable]
    expected = (rows - rows.mean(0)) / torch.sqrt(rows.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out[usable], expected, rtol=1e-4, atol=1e-5)
    assert float(out[~usable].abs().max()) == 0.0
    shifted = model._standardise(model.clr_video_norm, pooled_video + 50.0, usable)
    torch.testing.assert_close(shifted, model._standardise(model.clr_video_norm, pooled_video, usable),
                               rtol=1e-3, atol=1e-3)
    model.eval()
    running = model.clr_audio_norm.running_mean
    assert float(running.abs().max()) > 0  # updated by the training-mode calls
    frozen = model._standardise(model.clr_audio_norm, pooled_audio, usable)
    torch.testing.assert_close(frozen[0], (pooled_audio[0] - running) / torch.sqrt(model.clr_audio_norm.running_var
                                                                                  + 1e-5), rtol=1e-4, atol=1e-5)


def test_tiny_av_model_learns_retrieval_on_held_out_clips():
    """MAE + CLR for 300 updates of 8 fresh synthetic clips: both MAE losses and the CLR loss fall on held-out
    clips, and audio->video top-1 retrieval among 32 held-out clips is well above chance (1/32)."""
    torch.manual_seed(0)
    model = tiny_av(clr_head="batchnorm")  # train's default head
    held_out = synthetic_clips(32, torch.Generator().manual_seed(99))

    def evaluate():
        model.eval()
        with torch.no_grad():
            out = model(*held_out, generator=torch.Generator().manual_seed(0))
            audio, video, usable = model.embed(*held_out)
        model.train()
        assert usable.all()
        return {k: float(out[k]) for k in ("mae_audio", "mae_video", "clr")}, retrieval(audio, video)

    first, first_retrieval = evaluate()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        out = model(*synthetic_clips(8, g))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    last, last_retrieval = evaluate()
    for part in ("mae_audio", "mae_video", "clr"):
        assert last[part] < 0.75 * first[part], (part, first, last)
    assert last_retrieval["retrieval_chance"] == 1 / 32
    assert last_retrieval["a2v_top1"] > 3 * last_retrieval["retrieval_chance"], (first_retrieval, last_retrieval)
