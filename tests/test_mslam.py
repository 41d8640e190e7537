"""mSLAM joint speech-text pre-training: the tied character layer, text span masking against its expectation, loss
only on masked characters, a tiny pre-training run, ST initialisation through ``train --init-from``, and the
zero-shot text-translation probe of ``decode --task st --input text``. Synthetic features only (no audio)."""

import json
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from icefall_ext.models.presets import build_model, model_config_from_preset, st_config_from_preset
from icefall_ext.pretrain.mslam import (
    MslamModel,
    expected_text_masked_fraction,
    masked_cross_entropy,
    text_span_mask,
)
from icefall_ext.train.mslam import MslamObjective

LETTERS = "abcdef"
TOKENS = ["<blk>", "▁"] + list(LETTERS)
SENTENCES = ["abc abc abc def def def", "fed cba fed cba", "aabbccddeeff aabbcc", "face bead cafe"]


def tiny_mslam(**mslam) -> MslamModel:
    cfg = model_config_from_preset("conformer-tiny", 0, feature_dim=80)
    cfg.update(pretrain="mslam", best_rq=dict(num_codes=64, mask_prob=0.04, mask_frames=8),
               mslam=dict(source_tokens=TOKENS, **{"span": 3, "mask_fraction": 0.2, **mslam}))
    return build_model(cfg)


def ids_of(text: str):
    table = {c: i for i, c in enumerate(TOKENS)}
    return [table["▁" if c == " " else c] for c in text]


def synthetic_speech(n: int, frames: int, seed: int = 0):
    """Features made of segments of a few prototype vectors (+ noise); the transcript names the segments' letters."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(len(LETTERS), 80, generator=g) * 2
    xs, texts = [], []
    for _ in range(n):
        segments, text, t = [], "", 0
        while t < frames:
            k = int(torch.randint(len(LETTERS), (1,), generator=g))
            d = int(torch.randint(12, 30, (1,), generator=g))
            segments.append(protos[k].expand(d, 80))
            text, t = text + LETTERS[k], t + d
        xs.append(torch.cat(segments)[:frames] + 0.3 * torch.randn(frames, 80, generator=g))
        texts.append(text)
    return torch.stack(xs), texts


def test_ctc_and_text_mlm_share_one_output_layer():
    torch.manual_seed(0)
    model = tiny_mslam()
    assert model.output_layer is model.source_ctc.output
    assert model.mask_id == len(TOKENS) and model.text_frontend.embed.num_embeddings == len(TOKENS) + 1
    assert model.source_ctc.output.out_features == len(TOKENS)  # blank 0 .. last character; never [MASK]
    params = list(model.parameters())
    assert len({id(p) for p in params}) == len(params)
    calls = []
    model.output_layer.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    x, texts = synthetic_speech(2, 160)
    out = model(x, torch.tensor([160, 120]), text=[ids_of(s) for s in SENTENCES[:2]],
                paired=[ids_of(t) for t in texts], rng=random.Random(0))
    assert len(calls) == 2  # once for the text MLM, once for the paired CTC
    for part in ("text", "ctc"):  # each loss alone reaches the one layer
        model.zero_grad()
        out[part].backward(retain_graph=True)
        assert model.source_ctc.output.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("span,fraction", [(5, 0.15), (5, 0.3), (20, 0.15), (3, 0.5)])
def test_text_masked_fraction_matches_its_expectation(span, fraction):
    rng = random.Random(1)
    lengths = [rng.randint(1, 150) for _ in range(4000)]
    mask = text_span_mask(lengths, span, fraction, random.Random(2))
    observed = mask.sum().item() / sum(lengths)
    expected = sum(expected_text_masked_fraction(n, span, fraction) * n for n in lengths) / sum(lengths)
    assert abs(observed - expected) < 0.01
    long = [i for i, n in enumerate(lengths) if n >= 4 * span]
    long_fraction = mask[long].sum().item() / sum(lengths[i] for i in long)
    assert abs(long_fraction - fraction) < 0.015  # the cap never binds there: the target fraction itself


@pytest.mark.parametrize("span", [1, 5, 20])
def test_spans_have_the_requested_length(span):
    rng = random.Random(3)
    lengths = [rng.randint(1, 120) for _ in range(500)]
    mask = text_span_mask(lengths, span, 0.3, random.Random(4))
    runs_seen = 0
    for row, n in zip(mask.tolist(), lengths):
        assert not any(row[n:])  # nothing past the sentence
        runs = [len(r) for r in "".join("x" if m else " " for m in row[:n]).split()]
        assert all(r == min(span, n) for r in runs), (n, runs)  # exact length, never two spans merged
        runs_seen += len(runs)
    assert runs_seen > 100


def traced_text_mlm(model: MslamModel, text):
    """``model.text_mlm`` on ``text`` with what the text front end got (``"ids"``: [MASK] where masked) and the
    encoder output (``"enc"``, keeping its gradient)."""
    seen = {}
    model.text_frontend.register_forward_hook(lambda module, inputs, output: seen.update(ids=inputs[0]))
    forward_layers = model.encoder.forward_layers

    def capture(x, lens):
        out, out_lens = forward_layers(x, lens)
        out.retain_grad()
        seen["enc"] = out
        return out, out_lens

    model.encoder.forward_layers = capture
    return model.text_mlm(text, random.Random(6)), seen


def test_text_loss_only_on_masked_characters():
    torch.manual_seed(0)
    logits = torch.randn(3, 12, len(TOKENS), requires_grad=True)
    targets = torch.randint(1, len(TOKENS), (3, 12))
    mask = text_span_mask([12, 9, 5], 3, 0.3, random.Random(5))
    total, count, _ = masked_cross_entropy(logits, targets, mask)
    total.backward()
    assert count.item() == mask.sum().item() > 0
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask].abs().sum(-1) > 0).all()
    perturbed = logits.detach().clone()
    perturbed[~mask] += 10 * torch.randn_like(perturbed[~mask])
    assert masked_cross_entropy(perturbed, targets, mask)[0].item() == pytest.approx(total.item(), abs=1e-5)

    model = tiny_mslam(span=3, mask_fraction=0.3).eval()  # through the model: [MASK] in, gradient at masks only
    text = [ids_of(s) for s in SENTENCES]
    mlm, seen = traced_text_mlm(model, text)
    mlm["sum"].backward()
    ids = seen["ids"]
    masked = ids == model.mask_id
    assert masked.sum().item() == mlm["count"].item() > 0
    for i, sentence in enumerate(text):
        unmasked = ~masked[i, : len(sentence)]
        assert ids[i, : len(sentence)][unmasked].tolist() == torch.tensor(sentence)[unmasked].tolist()
    grad = seen["enc"].grad.abs().sum(-1)
    assert (grad[~masked] == 0).all() and (grad[masked] > 0).all()


def test_text_loss_all_scores_every_character_and_no_padding():
    model = tiny_mslam(span=3, mask_fraction=0.3, text_loss="all").eval()
    text = [ids_of(s) for s in SENTENCES]
    mlm, seen = traced_text_mlm(model, text)
    assert mlm["count"].item() == sum(len(t) for t in text)
    assert (seen["ids"] == model.mask_id).any()  # the input is still span-masked
    # the summed loss is the cross-entropy of every sentence's characters, recomputed by hand from the encoder output
    logits = model.output_layer(seen["enc"].detach())
    by_hand = sum(torch.nn.functional.cross_entropy(logits[i, : len(t)], torch.tensor(t), reduction="sum")
                  for i, t in enumerate(text))
    assert mlm["sum"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    mlm["sum"].backward()
    grad = seen["enc"].grad.abs().sum(-1)
    for i, t in enumerate(text):
        assert (grad[i, : len(t)] > 0).all() and (grad[i, len(t):] == 0).all()
    with pytest.raises(ValueError, match="text_loss"):
        tiny_mslam(text_loss="unmasked")


class FakeTrainer(SimpleNamespace):
    """What an objective reads from the trainer."""

    def autocast(self):
        return torch.autocast("cpu", enabled=False)


def test_tiny_pretraining_lowers_all_three_losses():
    """A few dozen updates of the objective (speech batch + drawn sentences + the batch's transcripts as paired
    data) on one synthetic batch: each of the three losses ends well below where it started."""
    torch.manual_seed(0)
    model = tiny_mslam()
    objective = MslamObjective(SENTENCES, seed=1)
    x, texts = synthetic_speech(4, 240)
    batch = {"features": x, "feature_lens": torch.full((4,), 240), "source_texts": texts}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    trainer = FakeTrainer(device=torch.device("cpu"), rank=0, update=0)
    history = []
    for update in range(60):
        trainer.update = update
        loss, parts = objective.loss(trainer, model, batch, None)
        optimizer.zero_grad()
        (loss / 4).backward()
        optimizer.step()
        history.append(parts)
    assert 0.1 < history[0]["text_masked_fraction"] < 0.4 and 0.05 < history[0]["masked_fraction"] < 0.6
    for part in ("speech", "text", "ctc"):
        first = np.mean([h[part] for h in history[:3]])
        last = np.mean([h[part] for h in history[-5:]])
        assert last < 0.75 * first, (part, first, last)
    # the text draw depends on (seed, update, rank) only: the same update draws the same sentences and masks
    trainer.update = 7
    model.eval()
    repeats = []
    for _ in range(2):
        torch.manual_seed(3)  # the speech masks come from the torch RNG, as BEST-RQ's
        repeats.append(objective.loss(trainer, model, batch, None)[1])
    assert repeats[0] == repeats[1]


def test_speech_only_and_unaligned_variants():
    """text weight 0 draws no text; use_ctc false computes no CTC; the speech loss is the same BEST-RQ in all."""
    x, texts = synthetic_speech(2, 160)
    batch = {"features": x, "feature_lens": torch.tensor([160, 140]), "source_texts": texts}
    trainer = FakeTrainer(device=torch.device("cpu"), rank=0, update=0)
    torch.manual_seed(0)
    speech_only = tiny_mslam(text_scale=0.0, use_ctc=False, ctc_scale=0.0)
    _, parts = MslamObjective(SENTENCES).loss(trainer, speech_only, batch, None)
    assert parts["text"] == 0.0 and parts["ctc"] == 0.0 and parts["speech"] > 0
    unaligned = tiny_mslam(use_ctc=False, ctc_scale=0.0)
    _, parts = MslamObjective(SENTENCES).loss(trainer, unaligned, batch, None)
    assert parts["text"] > 0 and parts["ctc"] == 0.0


def test_transfer_maps_text_rows_by_symbol_and_drops_mask():
    from icefall_ext.train.init import transfer_weights

    torch.manual_seed(0)
    pre = tiny_mslam()
    new_source = ["<blk>", "c", "a", "▁", "x"]
    st = build_model(st_config_from_preset("conformer-tiny", 10, len(new_source), source_ctc=True, text_input=True))
    fresh = {k: v.clone() for k, v in st.state_dict().items()}
    tables = {k: (TOKENS, new_source) for k in ("text_frontend.embed.weight", "source_ctc.output.weight",
                                                "source_ctc.output.bias")}
    done = transfer_weights(st, pre.state_dict(), [], [f"t{i}" for i in range(10)], row_tables=tables)
    o, n = pre.state_dict(), st.state_dict()
    for name in tables:
        for new_i, old_i in [(0, 0), (1, TOKENS.index("c")), (2, TOKENS.index("a")), (3, 1)]:
            torch.testing.assert_close(n[name][new_i], o[name][old_i], rtol=0, atol=0)
        torch.testing.assert_close(n[name][4], fresh[name][4], rtol=0, atol=0)  # "x" is new
        assert done[name] == "rows: 4 of 5 copied"
    assert all(done[k] == "copied" for k in n if k.startswith(("encoder.", "text_frontend.norm")))


def translation(text: str) -> str:
    """The "English" of a synthetic transcript: its letters upper-cased, one word each (so that BLEU counts n-grams)."""
    return " ".join(text.upper())


def write_synthetic_corpus(d, n: int = 8):
    """Cuts with synthetic 80-dim features (lilcom), transcripts, languages and English translations; source and
    target character tables; a text file."""
    from lhotse import CutSet, LilcomChunkyWriter, MonoCut, SupervisionSegment
    from lhotse.features.base import Features

    from icefall_ext.data.tokenizer import CharTokenizer

    x, texts = synthetic_speech(n, 200, seed=1)
    cuts = []
    with LilcomChunkyWriter(d / "feats") as writer:
        for i, (feats, text) in enumerate(zip(x.numpy(), texts)):
            cid = f"utt{i}"
            sup = SupervisionSegment(id=cid, recording_id=cid, start=0, duration=2.0, text=text, language="fr",
                                     custom={"translated_text": {"en": translation(text)}})
            cut = MonoCut(id=cid, start=0.0, duration=2.0, channel=0, supervisions=[sup])
            cut.features = Features(type="kaldi-native-fbank", num_frames=200, num_features=80, frame_shift=0.01,
                                    sampling_rate=16000, start=0, duration=2.0, storage_type=writer.name,
                                    storage_path=str(writer.storage_path), storage_key=writer.write(cid, feats))
            cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(d / "cuts.jsonl.gz")
    CharTokenizer(TOKENS).save(d / "lang_src")
    CharTokenizer.build(translation(t) for t in texts).save(d / "lang_tgt")
    (d / "text.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return texts


def test_checkpoint_initialises_an_st_model_through_train_init_from(tmp_path):
    """`train --pretrain mslam` runs through the trainer and validates; `train --task st --init-from` of its
    checkpoint gets a text path, and its encoder, text front end and source CTC layer equal the pre-trained ones
    (trained at --lr 0, so the saved ST weights are the initial ones)."""
    from conftest import THREADS
    from icefall_ext.train.checkpoint import epoch_checkpoints, load_averaged_model, load_checkpoint

    write_synthetic_corpus(tmp_path)
    common = ["--train-cuts", str(tmp_path / "cuts.jsonl.gz"), "--valid-cuts", str(tmp_path / "cuts.jsonl.gz"),
              "--preset", "conformer-tiny", "--max-duration", "8", "--num-epochs", "0", "--threads", THREADS,
              "--spec-augment", "false", "--log-every-n", "1", "--source-lang-dir", str(tmp_path / "lang_src")]
    pre = tmp_path / "mslam"
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.train", "--exp-dir", str(pre), "--pretrain", "mslam",
                        "--mslam-text", str(tmp_path / "text.txt"), "--mslam-span", "3", "--bestrq-num-codes", "64",
                        "--bestrq-mask-prob", "0.04", "--bestrq-mask-frames", "8", "--max-updates", "4",
                        "--valid-every-n", "2", *common], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mSLAM text: 4 sentences" in r.stderr and "speech " in r.stderr and "text " in r.stderr
    valid = [json.loads(line) for line in (pre / "valid.jsonl").read_text().splitlines()]
    assert {"speech_loss", "speech_acc", "text_loss", "text_acc", "ctc_loss"} <= set(valid[-1])
    config = json.loads((pre / "model_config.json").read_text())
    assert config["pretrain"] == "mslam" and config["mslam"]["source_tokens"] == TOKENS
    assert config["mslam"]["text_scale"] == 0.3 and config["mslam"]["ctc_scale"] == 0.03

    st = tmp_path / "st"
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.train", "--exp-dir", str(st), "--task", "st",
                        "--init-from", str(pre), "--lang-dir", str(tmp_path / "lang_tgt"), "--ctc-scale", "0.3",
                        "--lr", "0", "--max-updates", "1", *common], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    model, st_config, _ = load_averaged_model(st)
    assert st_config["st"]["text_input"] and model.text_frontend is not None and model.source_ctc is not None
    pre_state = load_checkpoint(epoch_checkpoints(pre)[-1][1])["model"]  # what --init-from DIR takes
    state = model.state_dict()
    shared = [k for k in state if k.startswith(("encoder.", "text_frontend.", "source_ctc."))]
    assert any(k.startswith("text_frontend.") for k in shared)
    for k in shared:
        want = pre_state[k][: len(TOKENS)] if k == "text_frontend.embed.weight" else pre_state[k]
        torch.testing.assert_close(state[k], want, rtol=0, atol=0, msg=k)


def test_zero_shot_text_decoding_writes_bleu_through_the_common_writer(tmp_path):
    """A tiny ST model with a text path translates the cuts' transcripts (`decode --task st --input text`): the
    hypotheses are those of greedy search over its text encoding, written as recogs/errs/summary with BLEU and a
    -text tag; after a short MT training on the same pairs the probe's BLEU is well above zero. A model without a text path
    is refused with a message."""
    from lhotse import CutSet

    from icefall_ext.bin import decode
    from icefall_ext.data.scoring import read_recogs
    from icefall_ext.data.tokenizer import load_tokenizer
    from icefall_ext.decode.attention import TEXT_MAX_LEN_RATIO, greedy_search
    from icefall_ext.decode.translate import encode_source_text
    from icefall_ext.train.checkpoint import save_checkpoint

    texts = write_synthetic_corpus(tmp_path, n=4)
    src, tgt = load_tokenizer(tmp_path / "lang_src"), load_tokenizer(tmp_path / "lang_tgt")
    torch.manual_seed(0)
    config = st_config_from_preset("conformer-tiny", tgt.vocab_size, src.vocab_size, text_input=True,
                                   label_smoothing=0.0)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    pairs = ([src.encode(t) for t in texts], [tgt.encode(translation(t)) for t in texts])
    for _ in range(150):
        optimizer.zero_grad()
        model.mt_loss(*pairs).backward()
        optimizer.step()
    model.eval()
    exp = tmp_path / "exp"
    save_checkpoint(exp / "epoch-1.pt", {"model": model.state_dict(), "model_config": config, "update": 150,
                                         "epoch": 1})
    args = ["--exp-dir", str(exp), "--lang-dir", str(tmp_path / "lang_tgt"), "--task", "st", "--input", "text",
            "--source-lang-dir", str(tmp_path / "lang_src"), "--cuts", f"test={tmp_path / 'cuts.jsonl.gz'}",
            "--method", "st-greedy", "--device", "cpu"]
    decode.main(args)
    out = exp / "decode"
    summary = json.loads((out / "summary-test-st-greedy-text.json").read_text())
    assert summary["input"] == "text" and summary["num_utts"] == 4 and "bleu" in summary
    assert (out / "errs-test-st-greedy-text.txt").is_file() and "st-greedy" in (out / "results.tsv").read_text()
    cuts = list(CutSet.from_file(tmp_path / "cuts.jsonl.gz"))
    with torch.no_grad():
        enc, enc_lens = encode_source_text(model, src, [c.supervisions[0].text for c in cuts], torch.device("cpu"))
        want = {c.id: tgt.decode(t).split() for c, (t, _) in zip(cuts, greedy_search(model.decoder, enc, enc_lens,
                                                                                       max_len_ratio=TEXT_MAX_LEN_RATIO))}
    assert {k: hyp for k, (_, hyp) in read_recogs(out / "recogs-test-st-greedy-text.txt").items()} == want
    assert summary["bleu"] > 10.0  # ~33 after these updates (an untrained model: ~0): trained through the text path
    decode.main([a for a in args if a not in ("--input", "text")])  # the same sets from the audio, untagged
    assert json.loads((out / "summary-test-st-greedy.json").read_text())["input"] == "speech"

    speech_config = st_config_from_preset("conformer-tiny", tgt.vocab_size, src.vocab_size)
    exp2 = tmp_path / "exp2"
    save_checkpoint(exp2 / "epoch-1.pt", {"model": build_model(speech_config).state_dict(),
                                          "model_config": speech_config, "update": 0, "epoch": 1})
    with pytest.raises(SystemExit):
        decode.main([a if a != str(exp) else str(exp2) for a in args])
