"""Make cuts from lhotse recording/supervision manifests and compute their fbank features.

For every ``<prefix>_recordings_<part>.jsonl.gz`` in --manifest-dir matching --glob (with its
``_supervisions_`` twin), writes ``<out-dir>/<prefix>_cuts_<part>.jsonl.gz`` and the features beside it.
Cuts are trimmed to their supervisions, resampled to --sampling-rate, optionally speed-perturbed
(0.9/1.1, train parts only). Unreadable audio is reported by id and skipped. Existing outputs are kept.
Recordings without supervisions (noise corpora such as MUSAN) need --window-seconds: they are cut into windows
of that length (shorter remainders below half a window are dropped), e.g. for ``train --noise-cuts``.
Audio-visual corpora: when a video index ``<prefix>_video_<part>.jsonl.gz`` lies beside the manifest pair, every
written cut carries its frames as ``cut.custom["video_frames"]`` (uint8 (T, H, W) ``TemporalArray``; see
:mod:`icefall_ext.data.video`) and cuts without video are reported and dropped; speed perturbation is refused there.

    python -m icefall_ext.bin.compute_fbank --manifest-dir data/manifests --glob 'cv-*' --out-dir data/fbank
"""

from __future__ import annotations

import argparse
import gzip
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Optional

from ..common import die, setup_logging, str2bool

logger = logging.getLogger("icefall_ext.compute_fbank")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--glob", default="*", help="prefix pattern of the manifests to process (default: %(default)s)")
    p.add_argument("--parts", nargs="*", default=None, help="only these parts (e.g. dev test; default: all)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--num-mel-bins", type=int, default=80)
    p.add_argument("--sampling-rate", type=int, default=16000)
    p.add_argument("--num-jobs", type=int, default=2)
    p.add_argument("--speed-perturb", type=str2bool, default=False, help="add 0.9x and 1.1x copies of train parts")
    p.add_argument("--trim-to-supervisions", type=str2bool, default=True)
    p.add_argument("--window-seconds", type=float, default=0.0,
                   help="cut recordings into windows of this length (noise corpora without supervisions)")
    return p


def pairs(manifest_dir: Path, pattern: str, parts: Optional[List[str]] = None,
          allow_unsupervised: bool = False) -> List[tuple]:
    """(recordings, supervisions or None, cuts name) for each manifest pair under ``manifest_dir``."""
    found = []
    for rec in sorted(manifest_dir.glob(f"{pattern}_recordings_*.jsonl.gz")):
        part = rec.name.split("_recordings_", 1)[1].replace(".jsonl.gz", "")
        if parts and part not in parts:
            continue
        sup = rec.with_name(rec.name.replace("_recordings_", "_supervisions_"))
        if not sup.is_file() and allow_unsupervised:
            sup = None
        elif not sup.is_file():
            logger.warning("%s has no supervisions manifest %s: skipped", rec, sup.name)
            continue
        found.append((rec, sup, rec.name.replace("_recordings_", "_cuts_")))
    return found


def make_cuts(rec_path: Path, sup_path: Optional[Path], trim: bool, window_seconds: float = 0.0):
    """The cuts of a manifest pair (None when no recording has a supervision)."""
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.qa import fix_manifests

    def empty(path: Optional[Path]) -> bool:
        with gzip.open(path, "rt") as f:
            return not any(line.strip() for line in f)

    if empty(rec_path) or (sup_path is not None and empty(sup_path)):
        return None

    if window_seconds > 0:
        recordings = RecordingSet.from_file(rec_path)
        supervisions = SupervisionSet.from_file(sup_path) if sup_path else None
        cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions).cut_into_windows(
            window_seconds)
        return cuts.filter(lambda c: c.duration >= window_seconds / 2).to_eager()

    recordings, supervisions = fix_manifests(RecordingSet.from_file(rec_path), SupervisionSet.from_file(sup_path))
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    if trim:
        cuts = cuts.trim_to_supervisions(keep_overlapping=False)
    return cuts.to_eager()


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    if not args.manifest_dir.is_dir():
        die(f"manifest dir {args.manifest_dir} does not exist (run the preparation stage first)")
    todo = pairs(args.manifest_dir, args.glob, args.parts, allow_unsupervised=args.window_seconds > 0)
    if not todo:
        die(f"no '{args.glob}_recordings_*.jsonl.gz' manifests in {args.manifest_dir}")

    from ..data.features import FbankOptions, compute_and_store_fbank
    from ..data.video import attach_video, video_index_path

    opts = FbankOptions(sampling_rate=args.sampling_rate, num_mel_bins=args.num_mel_bins)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.num_jobs) as pool:  # one pool for all manifests: no start-up per file
        for rec, sup, name in todo:
            out = args.out_dir / name
            if out.is_file():
                logger.info("%s exists: skipped", out)
                continue
            cuts = make_cuts(rec, sup, args.trim_to_supervisions, args.window_seconds)
            if cuts is None:
                logger.warning("%s: no recordings with supervisions (every item was bad, or none was prepared): "
                               "no %s written", rec, out.name)
                continue
            video_index = video_index_path(rec)
            if video_index.is_file():
                if args.speed_perturb and "_train" in name:
                    die(f"{rec}: --speed-perturb would desynchronise the video of {video_index.name}")
                cuts = attach_video(cuts, video_index)
            if args.speed_perturb and "_train" in name:
                cuts = cuts + cuts.perturb_speed(0.9) + cuts.perturb_speed(1.1)
            stem = name.replace(".jsonl.gz", "")
            with_feats, report = compute_and_store_fbank(cuts, args.out_dir / f"{stem}_storage", stem, opts,
                                                         args.num_jobs, executor=pool)
            if len(with_feats) == 0:
                logger.warning("%s: none of its %d cuts has features: no %s written", rec, len(cuts), out.name)
                continue
            tmp = out.with_name(out.name.replace(".jsonl.gz", ".tmp.jsonl.gz"))
            with_feats.to_file(tmp)
            tmp.rename(out)
            logger.info("wrote %s: %d cuts, %.2f h (%d bad audio skipped)", out, len(with_feats),
                        sum(c.duration for c in with_feats) / 3600, len(report.failed))

if __name__ == "__main__":
    main()
