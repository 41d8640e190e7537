"""Import a corpus given as a Kaldi data directory or a TSV/CSV table into lhotse manifests.

    python -m icefall_ext.bin.import_corpus --source data/kaldi/train --prefix mycorpus --part train \\
        --out-dir data/manifests
    python -m icefall_ext.bin.import_corpus --source train.tsv --prefix mycorpus --part train --language en

Writes ``<out-dir>/<prefix>_recordings_<part>.jsonl.gz`` and ``<prefix>_supervisions_<part>.jsonl.gz`` (what
``compute_fbank --glob <prefix>`` reads). Audio keeps its own sampling rate here; features are computed at the
model's rate. Bad entries (empty lines, duplicate ids, missing audio, ids in ``text`` without audio, empty
transcripts) are counted by reason and logged with their ids, and skipped. See
:mod:`icefall_ext.data.importers` for the accepted formats.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from ..common import die, setup_logging

logger = logging.getLogger("icefall_ext.import_corpus")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, required=True, help="Kaldi data directory, or a .tsv/.csv table")
    p.add_argument("--prefix", required=True, help="corpus name used in the manifest file names")
    p.add_argument("--part", required=True, help="train, dev, test, ...")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--language", default=None, help="language of supervisions that do not name one")
    p.add_argument("--sampling-rate", type=int, default=0,
                   help="Kaldi dirs: the audio's rate (0: read it from the first file of wav.scp)")
    p.add_argument("--num-jobs", type=int, default=2)
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    from ..data.importers import import_corpus

    if not args.source.exists():
        die(f"{args.source} does not exist")
    try:
        recordings, supervisions, report = import_corpus(args.source, args.sampling_rate or None, args.language,
                                                         args.num_jobs)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    report.log(f"{args.prefix} {args.part} ({args.source})")
    if recordings is None:
        die(f"{args.source}: no usable utterance (see the reasons above)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    recordings.to_file(args.out_dir / f"{args.prefix}_recordings_{args.part}.jsonl.gz")
    supervisions.to_file(args.out_dir / f"{args.prefix}_supervisions_{args.part}.jsonl.gz")
    rates = sorted({r.sampling_rate for r in recordings})
    logger.info("%s_%s: %d recordings (%s Hz), %d utterances, %.2f h", args.prefix, args.part, len(recordings),
                "/".join(map(str, rates)), len(supervisions), sum(s.duration for s in supervisions) / 3600)


if __name__ == "__main__":
    main()
