"""Fine-tuning across token / language sets: encoder weights kept, rows of shared symbols copied, new rows fresh."""

import torch

from icefall_ext.models.presets import build_model, model_config_from_preset
from icefall_ext.train.init import row_map, transfer_weights


def test_row_map():
    assert row_map(["<blk>", "a", "b", "c"], ["<blk>", "c", "x", "a"]) == ([0, 1, 3], [0, 3, 1])


def test_output_layers_rebuilt_encoder_kept():
    torch.manual_seed(0)
    old_tokens = ["<blk>", "a", "b", "c", "▁"]
    new_tokens = ["<blk>", "c", "z", "a", "▁", "q"]
    old_langs, new_langs = ["de", "en"], ["en", "fr", "de"]
    old = build_model(model_config_from_preset("conformer-tiny", vocab_size=5, num_languages=2,
                                               use_transducer=True, decoder_dim=16, joiner_dim=16))
    new = build_model(model_config_from_preset("conformer-tiny", vocab_size=6, num_languages=3,
                                               use_transducer=True, decoder_dim=16, joiner_dim=16))
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    done = transfer_weights(new, old.state_dict(), old_tokens, new_tokens, old_langs, new_langs)
    o, n = old.state_dict(), new.state_dict()
    for k in o:
        if k.startswith("encoder."):
            torch.testing.assert_close(n[k], o[k], rtol=0, atol=0)
            assert done[k] == "copied"
    token_params = [k for k in n if n[k].dim() >= 1 and n[k].shape[0] == 6 and o[k].shape[0] == 5]
    assert token_params, "the CTC output, joiner output, decoder embedding and simple LM projection"
    for k in token_params:
        for new_i, old_i in [(0, 0), (1, 3), (3, 1), (4, 4)]:
            torch.testing.assert_close(n[k][new_i], o[k][old_i], rtol=0, atol=0)
        for new_i in (2, 5):  # 'z' and 'q' are new symbols: left as freshly initialised
            torch.testing.assert_close(n[k][new_i], fresh[k][new_i], rtol=0, atol=0)
    lid = [k for k in n if k.startswith("lid.") and n[k].dim() >= 1 and n[k].shape[0] == 3]
    assert lid
    for k in lid:
        torch.testing.assert_close(n[k][0], o[k][1], rtol=0, atol=0)  # en
        torch.testing.assert_close(n[k][2], o[k][0], rtol=0, atol=0)  # de
        torch.testing.assert_close(n[k][1], fresh[k][1], rtol=0, atol=0)  # fr is new


def test_same_tables_copy_everything():
    torch.manual_seed(1)
    cfg = model_config_from_preset("conformer-tiny", vocab_size=5)
    a, b = build_model(cfg), build_model(cfg)
    toks = ["<blk>", "a", "b", "c", "d"]
    done = transfer_weights(b, a.state_dict(), toks, toks)
    assert set(done.values()) == {"copied"}
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=0)
