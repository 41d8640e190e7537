"""Decoding of speech-translation models (``bin/decode --task st``): greedy or beam search over the attention
decoder, BLEU and chrF with sacrebleu (13a tokenisation, case-sensitive, detokenised text) in total and per source
language, written with the ASR decoder's result writer (``recogs-*``, ``errs-*``, ``summary-*.json``, a line in
``results.tsv``) plus the BLEU figures in the summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

ST_METHODS = ("st-greedy", "st-beam")


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


def translate_cuts(model, tokenizer, cuts, method: str, device: torch.device, max_duration: float, beam: int,
                   length_penalty: float, desc: str) -> List[Tuple[str, str, str]]:
    """(cut id, reference translation, hypothesis) for every cut."""
    from tqdm import tqdm

    from ..data.dataset import iterate_batches
    from .attention import beam_search, greedy_search

    out = []
    with torch.no_grad():
        for batch in tqdm(iterate_batches(cuts, max_duration, target="translation"), desc=desc, mininterval=5.0):
            enc, enc_lens = model.forward_encoder(batch["features"].to(device), batch["feature_lens"].to(device))
            if method == "st-greedy":
                found = greedy_search(model.decoder, enc.float(), enc_lens)
            else:
                found = beam_search(model.decoder, enc.float(), enc_lens, beam=beam, length_penalty=length_penalty)
            out += [(cid, ref, tokenizer.decode(tokens))
                    for cid, ref, (tokens, _) in zip(batch["cut_ids"], batch["texts"], found)]
    return out


def decode_translation_sets(model, tokenizer, sets: Sequence[Tuple[str, Path]], methods: Sequence[str],
                            device: torch.device, out_dir: Path, *, source: str, checkpoints: str, beam: int = 4,
                            length_penalty: float = 1.0, max_duration: float = 300.0, tag: str = "") -> None:
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
                                 f"{method} {name}")
            languages = [langs[c] for c, _, _ in res]
            extra = {"hours": audio / 3600, "rtf": (time.time() - t0) / max(audio, 1e-9),
                     "beam": beam if method == "st-beam" else 1, "length_penalty": length_penalty,
                     **bleu_report([r for _, r, _ in res], [h for _, _, h in res], languages)}
            write_results(out_dir, f"{name}-{method}{tag}", res, languages, metric="wer", source=source,
                          set_name=name, method=method, checkpoints=checkpoints, extra=extra)
            per = " ".join(f"{k}:{v:.1f}" for k, v in extra["per_language_bleu"].items())
            logger.info("%s %s: BLEU %.2f chrF %.2f (per language %s)", name, method, extra["bleu"], extra["chrf"],
                        per)
            print(f"{name}\t{method}\tBLEU {extra['bleu']:.2f}\tchrF {extra['chrf']:.2f}\t{per}")
