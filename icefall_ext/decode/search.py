"""Model-level decoding of a batch: runs the encoder and the chosen search, whatever heads the model has.

Methods: ``ctc-greedy``, ``ctc-beam`` (prefix beam search; with ``lm`` for word n-gram shallow fusion),
``greedy`` (transducer batched greedy), ``modified-beam`` (transducer, beam 4 by default). ``auto`` picks
transducer greedy when the model has a transducer, else CTC greedy. ``streaming-greedy`` (causal transducer only)
decodes each utterance chunk by chunk with explicit encoder states, exactly as sherpa-onnx's online recognizer
does (:func:`icefall_ext.export.streaming.online_greedy_search`); it works from audio, not from a batch.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

METHODS = ("auto", "ctc-greedy", "ctc-beam", "greedy", "modified-beam", "streaming-greedy")


def resolve_method(model, method: str) -> str:
    has_transducer = getattr(model, "joiner", None) is not None
    has_ctc = getattr(model, "ctc", None) is not None
    if method == "auto":
        return "greedy" if has_transducer else "ctc-greedy"
    if method.startswith("ctc") and not has_ctc:
        raise ValueError(f"--method {method} needs a CTC head; this model has none")
    if method in ("greedy", "modified-beam") and not has_transducer:
        raise ValueError(f"--method {method} needs a transducer; this model has none (use ctc-greedy)")
    if method == "streaming-greedy" and not (has_transducer and getattr(model.encoder, "causal", False)):
        raise ValueError("--method streaming-greedy needs a causal (chunked) encoder with a transducer")
    if method == "streaming-greedy" and getattr(model, "adapters", None) is not None:
        raise ValueError("--method streaming-greedy does not support per-language adapters (offline methods do)")
    if method == "streaming-greedy" and getattr(model, "layer_mix", None) is not None:
        raise ValueError("--method streaming-greedy does not support a layer mix (offline methods do)")
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose from {METHODS}")
    return method


@torch.no_grad()
def decode_encoder_output(model, enc: torch.Tensor, enc_lens: torch.Tensor, method: str = "auto", *,
                          beam: int = 4, lm=None, alpha: float = 0.5, beta: float = 1.0,
                          token_table: Optional[List[str]] = None,
                          languages: Optional[Sequence[Optional[str]]] = None) -> List[List[int]]:
    """Token ids per utterance; ``lm`` (ctc-beam): one :class:`~.ngram.NgramLm`, or a dict of them by language
    (:data:`~.ngram.LanguageLms`) with ``languages`` giving each utterance's."""
    method = resolve_method(model, method)
    if method == "greedy":
        from .transducer import greedy_search_batch

        return greedy_search_batch(model, enc, enc_lens)
    if method == "modified-beam":
        from .transducer import modified_beam_search

        return modified_beam_search(model, enc, enc_lens, beam=beam)
    log_probs = model.ctc_log_probs(enc, enc_lens).float()
    return decode_ctc_log_probs(log_probs, enc_lens, method, beam=beam, lm=lm, alpha=alpha, beta=beta,
                                token_table=token_table, languages=languages)


@torch.no_grad()
def decode_encoder_output_with_confidence(
    model, enc: torch.Tensor, enc_lens: torch.Tensor, method: str = "auto", **kwargs
) -> Tuple[List[List[int]], List[Optional[float]]]:
    """:func:`decode_encoder_output` plus a confidence per utterance, for pseudo-label filtering.

    ``ctc-greedy`` (also when ``auto`` picks it): the greedy path's log-probability per emitted token
    (:func:`icefall_ext.decode.ctc.ctc_greedy_search_with_confidence`). ``ctc-beam`` (with or without an LM):
    the CTC log-likelihood of the chosen labels per token (:func:`icefall_ext.decode.ctc.ctc_label_confidence`),
    acoustic evidence only, so an LM-fused label the audio does not support scores low. Transducer methods
    record no confidence yet: ``None`` for every utterance.
    """
    from .ctc import ctc_greedy_search_with_confidence, ctc_label_confidence

    method = resolve_method(model, method)
    if method == "ctc-greedy":
        return ctc_greedy_search_with_confidence(model.ctc_log_probs(enc, enc_lens).float(), enc_lens)
    if method == "ctc-beam":
        log_probs = model.ctc_log_probs(enc, enc_lens).float()
        hyps = decode_ctc_log_probs(log_probs, enc_lens, method, **kwargs)
        return hyps, ctc_label_confidence(log_probs, enc_lens, hyps)
    hyps = decode_encoder_output(model, enc, enc_lens, method, **kwargs)
    return hyps, [None] * len(hyps)


def decode_ctc_log_probs(log_probs: torch.Tensor, lens: torch.Tensor, method: str = "ctc-greedy", *,
                         beam: int = 8, lm=None, alpha: float = 0.5, beta: float = 1.0,
                         token_table: Optional[List[str]] = None,
                         languages: Optional[Sequence[Optional[str]]] = None) -> List[List[int]]:
    """Greedy or prefix beam search over (N, T, V) CTC log-probs. ``lm`` may be a dict of LMs by language
    (:data:`~.ngram.LanguageLms`): each utterance is then searched with its language's LM (``languages``), or the
    one for every language (key None), or none."""
    from .ctc import ctc_greedy_search, ctc_prefix_beam_search
    from .ngram import lm_for_language

    if method == "ctc-greedy":
        return ctc_greedy_search(log_probs, lens)
    if not isinstance(lm, dict):
        return ctc_prefix_beam_search(log_probs, lens, beam=beam, lm=lm, token_table=token_table,
                                      alpha=alpha, beta=beta)
    if languages is None or len(languages) != log_probs.shape[0]:
        raise ValueError("LMs by language need the language of every utterance")
    groups: Dict[int, Tuple[object, List[int]]] = {}
    for n, language in enumerate(languages):
        chosen = lm_for_language(lm, language)
        groups.setdefault(id(chosen), (chosen, []))[1].append(n)
    hyps: List[Optional[List[int]]] = [None] * log_probs.shape[0]
    for chosen, rows in groups.values():
        index = torch.tensor(rows, device=log_probs.device)
        for n, hyp in zip(rows, ctc_prefix_beam_search(log_probs[index], lens[index.to(lens.device)], beam=beam,
                                                         lm=chosen, token_table=token_table, alpha=alpha,
                                                         beta=beta)):
            hyps[n] = hyp
    return hyps


_warned_no_adapter: set = set()


def adapter_languages(model, batch: Dict, device: torch.device) -> Optional[torch.Tensor]:
    """(N,) adapter ids of a batch's utterances for a model with per-language adapters (None without): each
    cut's language (``batch["cuts"]``; ``batch["languages"]`` when the batch has no cuts) looked up in the
    model's adapter languages. An utterance whose language has no adapter takes the "no adapter" path (-1: the
    encoder's own output), with a warning once per language."""
    adapters = getattr(model, "adapters", None)
    if adapters is None:
        return None
    if "cuts" not in batch:
        return batch["languages"].to(device)
    from ..data.dataset import cut_language

    codes = [cut_language(c) for c in batch["cuts"]]
    missing = sorted({str(c) for c in codes if c not in adapters.languages} - _warned_no_adapter)
    if missing:
        _warned_no_adapter.update(missing)
        logger.warning("no adapter for language(s) %s (adapters: %s): those utterances are decoded without one",
                       ", ".join(missing), ", ".join(adapters.languages))
    return adapters.language_ids(codes, device)


def encode_batch(model, batch: Dict, device: torch.device, chunk_frames: int = 0, overlap_frames: int = 0,
                 amp_dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Encoder output of a dataset batch; crop-and-stitch (:mod:`.chunked`) when the longest utterance exceeds
    ``chunk_frames`` (0: never). Crop and overlap are rounded down to multiples of the subsampling factor.
    A model with per-language adapters routes each utterance by its cut's language (:func:`adapter_languages`)."""
    from .chunked import chunked_log_probs

    feats = batch["features"].to(device)
    lens = batch["feature_lens"].to(device)
    lang = adapter_languages(model, batch, device)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if chunk_frames and int(lens.max()) > chunk_frames:
            sf = model.encoder.subsampling_factor
            return chunked_log_probs(lambda x, xl, *rows: model.forward_encoder(x, xl, *rows), feats, lens,
                                     chunk_frames=chunk_frames - chunk_frames % sf,
                                     overlap_frames=overlap_frames - overlap_frames % sf, subsampling_factor=sf,
                                     per_utterance=lang)
        return model.forward_encoder(feats, lens, lang) if lang is not None else model.forward_encoder(feats, lens)


@torch.no_grad()
def decode_batch(model, batch: Dict, device: torch.device, method: str = "auto", **kwargs) -> List[List[int]]:
    """Token ids of the best hypothesis for each utterance of a dataset batch (model in eval mode)."""
    enc, enc_lens = encode_batch(model, batch, device)
    return decode_encoder_output(model, enc, enc_lens, method, **kwargs)
