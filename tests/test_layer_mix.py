"""The learnt layer mix (icefall_ext.models.layer_mix): the heads' input is the softmax-weighted sum of the
normalised hidden states, checked against states computed by truncated copies of the encoder; a frozen encoder
leaves the mix trainable; unsupported uses are refused."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from icefall_ext.models.presets import build_model, model_config_from_preset


def tiny(encoder: str = "conformer", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config_from_preset(f"{encoder}-tiny", vocab_size=12, layer_mix=True,
                                                **overrides)).eval()


def features(n: int = 3, frames: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, frames, 80, generator=g), torch.tensor([frames, frames - 11, frames - 25][:n])


def state_after(encoder: torch.nn.Module, k: int, x, x_lens):
    """Brute force: the hidden state after the first ``k`` blocks, from a copy of the encoder that has only them."""
    truncated = copy.deepcopy(encoder)
    truncated.layers = torch.nn.ModuleList(list(truncated.layers)[:k])
    return truncated(x, x_lens)


def test_mix_equals_the_weighted_sum_of_truncated_encoders():
    model = tiny()
    num_blocks = len(model.encoder.layers)
    assert model.layer_mix.num_states == num_blocks + 1
    with torch.no_grad():
        model.layer_mix.weights.copy_(torch.randn(num_blocks + 1, generator=torch.Generator().manual_seed(3)))
    x, x_lens = features()
    weights = torch.softmax(model.layer_mix.weights.detach(), dim=0)
    with torch.no_grad():
        out, out_lens = model.forward_encoder(x, x_lens)
        expected = 0
        for k in range(num_blocks + 1):
            h, lens = state_after(model.encoder, k, x, x_lens)
            expected = expected + weights[k] * F.layer_norm(h, (h.size(-1),))
        final, final_lens = model.encoder(x, x_lens)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out_lens, lens) and torch.equal(out_lens, final_lens)
    assert not torch.allclose(out, final, atol=1e-2)  # not just the last block
    # a weight vector peaked on the last state gives (the normalised) last block's output
    with torch.no_grad():
        model.layer_mix.weights.copy_(torch.full((num_blocks + 1,), -1e4))
        model.layer_mix.weights[-1] = 0.0
        torch.testing.assert_close(model.forward_encoder(x, x_lens)[0], F.layer_norm(final, (final.size(-1),)))


def test_fresh_mix_is_the_mean_and_the_hooks_are_removed():
    model = tiny()
    assert torch.allclose(model.layer_mix.mixture(), torch.full((model.layer_mix.num_states,),
                                                                1 / model.layer_mix.num_states))
    x, x_lens = features()
    with torch.no_grad():
        model.forward_encoder(x, x_lens)
    assert all(not block._forward_hooks and not block._forward_pre_hooks for block in model.encoder.layers)


def test_frozen_encoder_trains_the_mix_and_the_head():
    from icefall_ext.bin.train import freeze_for_training

    model = tiny(ctc_head_layers=1).train()
    trainable = freeze_for_training(model, freeze_encoder=True, train_heads=True)
    assert trainable == model.layer_mix.weights.numel() + sum(p.numel() for p in model.ctc.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, x_lens = features()
    losses = model(x, x_lens, [[1, 2, 3], [4, 5], [6]])
    losses["ctc"].backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("encoder."))
    assert not torch.equal(after["layer_mix.weights"], before["layer_mix.weights"])


def test_unsupported_uses_are_refused():
    with pytest.raises(ValueError, match="one width"):
        tiny("zipformer")
    from icefall_ext.export.onnx_export import export_model

    model = tiny()
    with pytest.raises(ValueError, match="layer mix"):
        export_model(model, model_config_from_preset("conformer-tiny", vocab_size=12, layer_mix=True),
                     [f"t{i}" for i in range(12)], "/nonexistent", "ctc")
