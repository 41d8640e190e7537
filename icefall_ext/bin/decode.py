"""Decode test sets with a trained model and score them (per-language CER/WER; BLEU for speech translation).

    python -m icefall_ext.bin.decode --exp-dir exp/base --lang-dir data/lang_char --epoch 10 --avg 3 \\
        --cuts dev=data/fbank/cv-en_cuts_dev.jsonl.gz test=data/fbank/cv-en_cuts_test.jsonl.gz \\
        --method ctc-greedy ctc-beam --lm data/lm/4gram.arpa --alpha 0.5 --beta 1.0

For each test set and method it writes ``recogs-<set>-<method><tag>.txt``, ``errs-<set>-<method><tag>.txt``
(aligned errors and the per-language table), ``summary-<set>-<method><tag>.json``, and appends one line to
``<out-dir>/results.tsv``. Utterances longer than --chunk-seconds are decoded in overlapping crops whose outputs
are stitched back together (long-form audio such as VoxPopuli's ~30 s segments). ``--method streaming-greedy``
(causal transducers) decodes each utterance's audio chunk by chunk with --decode-chunk-len feature frames per
chunk, following sherpa-onnx's online recognizer, so its output can be compared with a streaming sherpa-onnx
decode of the exported model.

Zero-shot text translation (mSLAM's probe): ``--task st --input text --source-lang-dir data/lang_char`` translates
each cut's source *transcript* through the ST model's text path (``text_frontend``: a model trained with joint MT,
or initialised from an mSLAM checkpoint) and the same decoder; outputs are tagged ``-text``
(``recogs-<set>-<method>-text<tag>.txt``, BLEU in ``summary-*-text*.json``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from ..common import add_lm_args, add_model_args, die, lm_weights_from_args, load_lms_or_die, setup_logging
from ..train.precision import DTYPES, autocast_dtype

logger = logging.getLogger("icefall_ext.decode")


def get_parser() -> argparse.ArgumentParser:
    from ..decode.search import METHODS
    from ..decode.translate import ST_METHODS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=PATH or PATH (name = file stem)")
    p.add_argument("--task", choices=["auto", "asr", "st"], default="auto",
                   help="st: speech translation (BLEU); auto: what the model was trained for")
    p.add_argument("--method", nargs="+", default=["auto"], choices=METHODS + ST_METHODS,
                   help="ASR methods, or st-greedy / st-beam for translation (auto: ctc/transducer default, st-beam)")
    p.add_argument("--input", choices=["speech", "text"], default="speech",
                   help="st: translate the audio, or the cuts' source transcripts through the model's text path "
                        "(zero-shot text translation; needs --source-lang-dir; outputs tagged -text)")
    p.add_argument("--source-lang-dir", type=Path, default=None,
                   help="the source character table of --input text (the ST model's --source-lang-dir)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="st-beam: hypotheses ranked by log P / length ** this (0: raw log P)")
    add_lm_args(p)
    p.add_argument("--decode-chunk-len", type=int, default=32,
                   help="feature frames per chunk for streaming-greedy (as in export_onnx)")
    p.add_argument("--chunk-seconds", type=float, default=0.0, help="crop utterances longer than this (0: never)")
    p.add_argument("--chunk-overlap-seconds", type=float, default=2.0)
    p.add_argument("--max-duration", type=float, default=300.0, help="seconds of audio per batch")
    p.add_argument("--metric", choices=["auto", "cer", "wer"], default="auto",
                   help="unit of errs files: auto = cer for character tables, wer for BPE")
    p.add_argument("--duration-buckets", default="",
                   help="comma list of seconds, e.g. 10,15,20: also report WER per utterance-duration bucket")
    p.add_argument("--out-dir", type=Path, default=None, help="default: <exp-dir>/decode")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    from .train import add_attention_args

    add_attention_args(p, default_help="as trained; e.g. a full-attention model decoded chunk-wise")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="autocast dtype; auto: bfloat16 where the hardware has it natively, else float32")
    p.add_argument("--threads", type=int, default=0)
    return p


def parse_cut_args(items: List[str]) -> List[Tuple[str, Path]]:
    """(name, path) of each NAME=PATH or PATH (name = the file's stem); exits with a message on a missing file."""
    out = []
    for item in items:
        name, _, path = item.partition("=") if "=" in item else ("", "", item)
        path = Path(path)
        if not path.is_file():
            die(f"missing cut manifest {path}")
        out.append((name or path.name.replace(".jsonl.gz", ""), path))
    return out


def duration_bucket(duration: float, edges: List[float]) -> str:
    """Label of the bucket of ``duration``: "<10", "10-15", ..., ">20" for edges 10,15,20."""
    if duration < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges, edges[1:]):
        if duration < hi:
            return f"{lo:g}-{hi:g}"
    return f">{edges[-1]:g}"


def streaming_decode(model, cuts, tokenizer, decode_chunk_len: int,
                     device: torch.device) -> List[Tuple[str, str, str]]:
    """(cut id, reference, hypothesis) of chunk-by-chunk greedy search on each cut's audio.

    Features are computed from the audio plus the tail padding sherpa-onnx's online decoding adds, with the
    same kaldi-native-fbank front end, so the result is the PyTorch twin of a streaming sherpa-onnx decode.
    """
    from tqdm import tqdm

    from ..data.dataset import cut_text
    from ..data.features import compute_fbank
    from ..export.sherpa import load_cut_audio, streaming_padded
    from ..export.streaming import online_greedy_search

    out = []
    for cut in tqdm(cuts, desc="streaming decode", mininterval=5.0):
        (samples,), _ = load_cut_audio([cut])
        feats = torch.from_numpy(compute_fbank(streaming_padded(samples))).to(device)
        hyp = online_greedy_search(model, feats, decode_chunk_len)
        out.append((cut.id, cut_text(cut), tokenizer.decode(hyp)))
    return out


def restrict_attention(model: torch.nn.Module, args: argparse.Namespace) -> None:
    """Apply ``--attention*`` to the loaded model's Conformer (weights unchanged); no-op without ``--attention``.
    Raises ValueError for encoders without the option (causal Conformers, Zipformers)."""
    from .train import attention_encoder_kwargs

    kwargs = attention_encoder_kwargs(args)
    if not kwargs:
        return
    encoder = model.encoder
    if not hasattr(encoder, "attention") or getattr(encoder, "causal", False):
        raise ValueError("--attention applies to non-causal Conformer encoders only")
    for key, value in kwargs.items():
        setattr(encoder, key, value)
    logger.info("decoding with %s", kwargs)


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    out_dir = args.out_dir or args.exp_dir / "decode"
    setup_logging(out_dir / "log", "log-decode")
    if args.threads:
        torch.set_num_threads(args.threads)
    from lhotse import CutSet
    from tqdm import tqdm

    from ..data.dataset import cut_language, iterate_batches
    from ..data.scoring import score
    from ..decode.results import write_results
    from ..data.tokenizer import BpeTokenizer, load_tokenizer
    from ..decode.search import decode_encoder_output, encode_batch, resolve_method
    from ..train.checkpoint import load_averaged_model

    sets = parse_cut_args(args.cuts)
    try:
        tokenizer = load_tokenizer(args.lang_dir)
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              ("cpu" if args.device == "auto" else args.device))
        model, config, paths = load_averaged_model(args.exp_dir, args.epoch, args.avg, args.checkpoint, device)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    try:
        restrict_attention(model, args)
    except ValueError as e:
        die(str(e))
    ckpt_desc = ",".join(p.name for p in paths)
    task = "st" if config.get("task") == "st" else "asr"
    if args.task not in ("auto", task):
        die(f"--task {args.task}, but {args.exp_dir} holds a {task} model")
    if args.input == "text" and task != "st":
        die("--input text translates transcripts with a speech-translation model (--task st)")
    if config["vocab_size"] != tokenizer.vocab_size:
        die(f"{args.lang_dir}/tokens.txt has {tokenizer.vocab_size} tokens but the model was trained with "
            f"{config['vocab_size']}")
    if task == "st":
        from ..decode.translate import ST_METHODS, decode_translation_sets

        methods = ["st-beam" if m == "auto" else m for m in args.method]
        if any(m not in ST_METHODS for m in methods):
            die(f"a translation model decodes with {' / '.join(ST_METHODS)}")
        source_tokenizer = None
        if args.input == "text":
            if args.source_lang_dir is None:
                die("--input text needs --source-lang-dir (the source character table)")
            if getattr(model, "text_frontend", None) is None:
                die(f"{args.exp_dir} holds an ST model without a text path (text_frontend): train it with "
                    "--mt-scale > 0 or --init-from an mSLAM checkpoint")
            try:
                source_tokenizer = load_tokenizer(args.source_lang_dir)
            except (FileNotFoundError, ValueError) as e:
                die(str(e))
            if source_tokenizer.vocab_size != config["source_vocab_size"]:
                die(f"{args.source_lang_dir}/tokens.txt has {source_tokenizer.vocab_size} tokens but the model's "
                    f"source table had {config['source_vocab_size']}")
        decode_translation_sets(model, tokenizer, sets, methods, device, out_dir, source=str(args.exp_dir),
                                checkpoints=ckpt_desc, beam=args.beam,
                                length_penalty=args.length_penalty, max_duration=args.max_duration, tag=args.tag,
                                input=args.input, source_tokenizer=source_tokenizer)
        return
    alpha, beta = lm_weights_from_args(args)
    lm = load_lms_or_die(args.lm) if args.lm else None
    try:
        methods = [resolve_method(model, m) for m in args.method]
    except ValueError as e:
        die(str(e))
    metric = args.metric if args.metric != "auto" else ("wer" if isinstance(tokenizer, BpeTokenizer) else "cer")
    try:
        amp = autocast_dtype(args.dtype, device)
    except ValueError as e:
        die(str(e))
    chunk = int(args.chunk_seconds * 100)
    overlap = int(args.chunk_overlap_seconds * 100)

    for name, path in sets:
        cuts = CutSet.from_file(path).to_eager()
        results: Dict[str, List[Tuple[str, str, str]]] = {m: [] for m in methods}
        langs: Dict[str, Optional[str]] = {c.id: cut_language(c) for c in cuts}
        edges = [float(x) for x in args.duration_buckets.split(",") if x.strip()]
        buckets = {c.id: duration_bucket(c.duration, edges) for c in cuts} if edges else {}
        t0, audio = time.time(), sum(c.duration for c in cuts)
        batch_methods = [m for m in methods if m != "streaming-greedy"]
        if "streaming-greedy" in methods:
            results["streaming-greedy"] = streaming_decode(model, cuts, tokenizer, args.decode_chunk_len, device)
        with torch.no_grad():
            for batch in tqdm(iterate_batches(cuts, args.max_duration) if batch_methods else [],
                              desc=f"decode {name}", mininterval=5.0):
                enc, enc_lens = encode_batch(model, batch, device, chunk, overlap, amp)
                for m in batch_methods:
                    hyps = decode_encoder_output(model, enc.float(), enc_lens, m, beam=args.beam,
                                                 lm=lm if m == "ctc-beam" else None, alpha=alpha, beta=beta,
                                                 token_table=tokenizer.token_table,
                                                 languages=[langs[c] for c in batch["cut_ids"]])
                    for cid, ref, h in zip(batch["cut_ids"], batch["texts"], hyps):
                        results[m].append((cid, ref, tokenizer.decode(h)))
        elapsed = time.time() - t0
        for m in methods:
            with_lm = bool(lm) and m == "ctc-beam"
            res = results[m]
            extra = {"hours": audio / 3600, "rtf": elapsed / max(audio, 1e-9),
                     "alpha": alpha if with_lm else None, "beta": beta if with_lm else None}
            if buckets:
                by_dur = score([r for _, r, _ in res], [h for _, _, h in res], [buckets[c] for c, _, _ in res],
                               unit="word")
                extra["per_duration_wer"] = {k: v.rate for k, v in by_dur.per_language.items()}
                extra["per_duration_utts"] = {k: v.num_utts for k, v in by_dur.per_language.items()}
            write_results(out_dir, f"{name}-{m}{'-lm' if with_lm else ''}{args.tag}", res,
                          [langs[c] for c, _, _ in res], metric=metric, source=str(args.exp_dir), set_name=name,
                          method=m, checkpoints=ckpt_desc, lm=" ".join(args.lm) if with_lm else None, extra=extra)

if __name__ == "__main__":
    main()
