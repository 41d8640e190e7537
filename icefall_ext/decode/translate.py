"""Decoding of speech-translation models (``bin/decode --task st``): greedy or beam search over the attention
decoder, BLEU and chrF with sacrebleu (13a tokenisation, case-sensitive, detokenised text) in total and per source
language, written with the ASR decoder's result writer (``recogs-*``, ``errs-*``, ``summary-*.json``, a line in
``results.tsv``) plus the BLEU figures in the summary.

``input="text"`` (``decode --task st --input text``) is the zero-shot text-translation probe: the cuts' source
*transcripts*, as characters of the source table, go through the model's text path (``text_frontend`` ->
``encoder.forward_layers``) and the same decoder and search, and are scored against the same references; the
outputs carry a ``-text`` tag and ``"input": "text"`` in the summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

ST_METHODS = ("st-greedy", "st-beam")
INPUTS = ("speech", "text")


def bleu_report(refs: Sequence[str], hyps: Sequence[str], languages: Sequence[Optional[str]]) -> Dict:
    """Corpus BLEU / chrF over everything and per language (sacrebleu's defaults)."""
    from ..train.translation import corpus_scores

    report = dict(corpus_scores(list(hyps), list(refs)))
    per: Dict[str, Dict[str, float]] = {}
    for lang in sorted({l for l in languages if l}):
        idx = [i for i, l in enumerate(languages) if l == lang]
        per[lang] = corpus_scores([hyps[i] for i in idx], [refs[i] for i in idx])
    report["per_language_bleu"] = {k: v["bleu"] for k, v in per.items()}
    report["per_language_chrf"] = {k: v["chrf"] for k, v in per.items()}
    return report


def text_batches(cuts, batch_size: int = 64):
    """Batches of ``batch_size`` cuts without features: ``cut_ids``, ``texts`` (translations), ``source_texts``."""
    from ..data.dataset import cut_text, cut_translation

    cuts = list(cuts)
    for start in range(0, len(cuts), batch_size):
        chunk = cuts[start: start + batch_size]
        yield {"cut_ids": [c.id for c in chunk], "texts": [cut_translation(c) for c in chunk],
               "source_texts": [cut_text(c) for c in chunk]}


def encode_source_text(model, source_tokenizer, texts: Sequence[str], device: torch.device):
    """Encoder output of source sentences through the text path (unknown characters dropped)."""
    return model.encode_sources([source_tokenizer.encode(t, skip_unknown=True) for t in texts])


def translate_cuts(model, tokenizer, cuts, method: str, device: torch.device, max_duration: float, beam: int,
                   length_penalty: float, desc: str, source_tokenizer=None) -> List[Tuple[str, str, str]]:
    """(cut id, reference translation, hypothesis) for every cut: of its audio, or with ``source_tokenizer`` of its
    transcript through the text path."""
    from tqdm import tqdm

    from ..data.dataset import iterate_batches
    from .attention import MAX_LEN_RATIO, TEXT_MAX_LEN_RATIO, beam_search, greedy_search

    ratio = MAX_LEN_RATIO if source_tokenizer is None else TEXT_MAX_LEN_RATIO
    out = []
    batches = (iterate_batches(cuts, max_duration, target="translation") if source_tokenizer is None
               else text_batches(cuts))
    with torch.no_grad():
        for batch in tqdm(batches, desc=desc, mininterval=5.0):
            if source_tokenizer is None:
                enc, enc_lens = model.forward_encoder(batch["features"].to(device),
                                                      batch["feature_lens"].to(device))
            else:
                enc, enc_lens = encode_source_text(model, source_tokenizer, batch["source_texts"], device)
            if method == "st-greedy":
                found = greedy_search(model.decoder, enc.float(), enc_lens, max_len_ratio=ratio)
            else:
                found = beam_search(model.decoder, enc.float(), enc_lens, beam=beam, length_penalty=length_penalty,
                                    max_len_ratio=ratio)
            out += [(cid, ref, tokenizer.decode(tokens))
                    for cid, ref, (tokens, _) in zip(batch["cut_ids"], batch["texts"], found)]
    return out


def decode_translation_sets(model, tokenizer, sets: Sequence[Tuple[str, Path]], methods: Sequence[str],
                            device: torch.device, out_dir: Path, *, source: str, checkpoints: str, beam: int = 4,
                            length_penalty: float = 1.0, max_duration: float = 300.0, tag: str = "",
                            input: str = "speech", source_tokenizer=None) -> None:
    """Translate and score every set with every method (see the module docstring); ``input="text"`` needs the
    source character table (``source_tokenizer``) and a model with a text path, and adds ``-text`` to the tag."""
    if input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, not {input!r}")
    if input == "text":
        if source_tokenizer is None or getattr(model, "text_frontend", None) is None:
            raise ValueError("text input needs the source character table and a model with a text path "
                             "(text_frontend: trained with --mt-scale > 0 or initialised from mSLAM)")
        tag = "-text" + tag
    from lhotse import CutSet

    from ..data.dataset import cut_language
    from .results import write_results

    for name, path in sets:
        cuts = CutSet.from_file(path).to_eager()
        langs = {c.id: cut_language(c) for c in cuts}
        audio = sum(c.duration for c in cuts)
        for method in methods:
            t0 = time.time()
            res = translate_cuts(model, tokenizer, cuts, method, device, max_duration, beam, length_penalty,
                                 f"{method} {name} ({input})", source_tokenizer if input == "text" else None)
            languages = [langs[c] for c, _, _ in res]
            extra = {"input": input, "hours": audio / 3600, "rtf": (time.time() - t0) / max(audio, 1e-9),
                     "beam": beam if method == "st-beam" else 1, "length_penalty": length_penalty,
                     **bleu_report([r for _, r, _ in res], [h for _, _, h in res], languages)}
            write_results(out_dir, f"{name}-{method}{tag}", res, languages, metric="wer", source=source,
                          set_name=name, method=method, checkpoints=checkpoints, extra=extra)
            per = " ".join(f"{k}:{v:.1f}" for k, v in extra["per_language_bleu"].items())
            logger.info("%s %s: BLEU %.2f chrF %.2f (per language %s)", name, method, extra["bleu"], extra["chrf"],
                        per)
            print(f"{name}\t{method}{tag}\tBLEU {extra['bleu']:.2f}\tchrF {extra['chrf']:.2f}\t{per}")
