"""Decode the audio of cut manifests with sherpa-onnx from an exported directory, and score it.

    python -m icefall_ext.bin.sherpa_decode --onnx-dir exp/base/onnx \\
        --cuts test=data/fbank/cv-en_cuts_test.jsonl.gz --out-dir exp/base/sherpa

The export type is read from the directory's files unless --type says it. For each set it writes
``recogs-<set>-sherpa-<type><tag>.txt``, ``errs-<set>-sherpa-<type><tag>.txt`` (aligned errors and the
per-language table), ``summary-<set>-sherpa-<type><tag>.json``, appends one line to ``<out-dir>/results.tsv``
(the columns of icefall_ext.bin.decode) and prints the CER/WER.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..common import die, setup_logging, str2bool

logger = logging.getLogger("icefall_ext.sherpa_decode")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx-dir", type=Path, required=True)
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=PATH or PATH (name = file stem)")
    p.add_argument("--type", default="auto", help="auto, transducer, ctc or streaming-transducer")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--int8", type=str2bool, default=False, help="decode with the *.int8.onnx files")
    p.add_argument("--decoding-method", default="greedy_search", choices=["greedy_search", "modified_beam_search"])
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16, help="utterances decoded together")
    p.add_argument("--metric", choices=["auto", "cer", "wer"], default="auto",
                   help="unit of errs files: auto = cer for character tables, wer for word pieces")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    return p


def is_character_table(token_table: Sequence[str]) -> bool:
    """True when every symbol but the special ``<...>`` ones is a single character."""
    return all(len(s) == 1 for s in token_table if not (s.startswith("<") and s.endswith(">")))


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.out_dir / "log", "log-sherpa-decode")
    from ..bin.decode import parse_cut_args

    sets = parse_cut_args(args.cuts)
    from lhotse import CutSet

    from ..data.dataset import cut_language, cut_text
    from ..decode.results import write_results
    from ..decode.ctc import tokens_to_text
    from ..export.sherpa import SherpaDecoder, load_cut_audio

    try:
        decoder = SherpaDecoder(args.onnx_dir, args.type, num_threads=args.num_threads, int8=args.int8,
                                decoding_method=args.decoding_method)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    table = decoder.token_table
    metric = args.metric if args.metric != "auto" else ("cer" if is_character_table(table) else "wer")
    method = f"sherpa-{decoder.export_type}{'-int8' if args.int8 else ''}"
    for name, path in sets:
        cuts = CutSet.from_file(path).to_eager()
        results, languages = [], []
        audio = decode_time = 0.0
        for start in range(0, len(cuts), args.batch_size):
            batch = cuts[start : start + args.batch_size]
            waveforms, durations = load_cut_audio(batch)
            t0 = time.perf_counter()
            hyps = decoder.decode(waveforms)
            decode_time += time.perf_counter() - t0
            audio += sum(durations)
            for cut, hyp in zip(batch, hyps):
                results.append((cut.id, cut_text(cut), tokens_to_text(hyp, table)))
                languages.append(cut_language(cut))
        if not results:
            die(f"{path} holds no cuts")
        write_results(args.out_dir, f"{name}-{method}{args.tag}", results, languages, metric=metric,
                      source=str(args.onnx_dir), set_name=name, method=method,
                      extra={"decoding_method": args.decoding_method, "num_threads": args.num_threads,
                             "hours": audio / 3600, "rtf": decode_time / max(audio, 1e-9)})

if __name__ == "__main__":
    main()
