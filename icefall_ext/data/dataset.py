"""Batches for training and decoding: lhotse's DynamicBucketingSampler (``--max-duration``) over cuts with
precomputed features, lhotse's SpecAugment, and optional noise mixing (lhotse CutMix)."""

from __future__ import annotations

import itertools

import logging
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from lhotse import CutSet
from lhotse.dataset import CutMix, DynamicBucketingSampler, SimpleCutSampler, SpecAugment
from lhotse.dataset.collation import collate_custom_field, collate_features

from ..common import atomic_write_text
from . import features  # noqa: F401  (registers the kaldi-native-fbank extractor with lhotse, for mixing)
from .tokenizer import Tokenizer

logger = logging.getLogger(__name__)

VIDEO_FIELD = "video_frames"  # cut.custom key of the video frames (see icefall_ext.data.video)


def cut_text(cut) -> str:
    return " ".join((s.text or "").strip() for s in cut.supervisions).strip()


def cut_translation(cut, language: Optional[str] = None) -> str:
    """The cut's translation into ``language`` (``custom["translated_text"]``, lhotse's iwslt22_ta convention);
    ``None``: its only translation (CoVoST 2: English; MuST-C en-<tgt>: <tgt>), else the English one."""
    sup = cut.supervisions[0] if cut.supervisions else None
    translations = ((sup.custom or {}).get("translated_text") or {}) if sup else {}
    if language is None:
        language = next(iter(translations)) if len(translations) == 1 else "en"
    return (translations.get(language) or "").strip()


def cut_language(cut) -> Optional[str]:
    return cut.supervisions[0].language if cut.supervisions else None


def read_languages(path: Path) -> List[str]:
    """``languages.txt``: one language code per line; line index = LID class id."""
    return [l.strip() for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]


def write_languages(languages: Sequence[str], path: Path) -> None:
    atomic_write_text(Path(path), "".join(f"{l}\n" for l in languages))


class AsrDataset(torch.utils.data.Dataset):
    """Turns a CutSet (one sampler batch) into padded features, token ids, and language ids.

    Returns ``{"features": (N,T,F), "feature_lens": (N,), "texts", "tokens": list[list[int]] | None,
    "source_texts", "languages": (N,) int64 (-1 when unknown), "cut_ids", "cuts"}``, sorted by decreasing
    duration. ``texts`` (what ``tokens`` encode) are the transcripts, or with ``target="translation"`` the English
    translations (speech translation); ``source_texts`` are always the transcripts. When the cuts carry video
    (``custom["video_frames"]``: uint8 (T, H, W) TemporalArrays at 25 fps), also ``"video"`` (N, T, H, W) uint8
    (zero-padded) and ``"video_lens"`` (N,) int64; a batch mixing cuts with and without video is an error.
    ``video=False`` never loads the frames (audio-only training and decoding of audio-visual cuts).
    """

    def __init__(
        self,
        tokenizer: Optional[Tokenizer] = None,
        languages: Optional[Sequence[str]] = None,
        spec_augment: Optional[SpecAugment] = None,
        noise: Optional[CutMix] = None,
        skip_unknown_tokens: bool = False,
        target: str = "text",
        video: bool = True,
    ) -> None:
        if target not in ("text", "translation"):
            raise ValueError(f"target must be 'text' or 'translation', not {target!r}")
        self.target = target
        self.tokenizer = tokenizer
        self.lang2id = {l: i for i, l in enumerate(languages or [])}
        self.spec_augment = spec_augment
        self.noise = noise
        self.skip_unknown_tokens = skip_unknown_tokens
        self.video = video

    def __getitem__(self, cuts: CutSet) -> Dict:
        cuts = cuts.sort_by_duration(ascending=False)
        if self.noise is not None:
            cuts = self.noise(cuts)
        feats, feat_lens = collate_features(cuts)
        if self.spec_augment is not None:
            feats = self.spec_augment(feats)
        sources = [cut_text(c) for c in cuts]
        texts = sources if self.target == "text" else [cut_translation(c) for c in cuts]
        tokens = None
        if self.tokenizer is not None:
            tokens = [self.tokenizer.encode(t, skip_unknown=self.skip_unknown_tokens) for t in texts]
        langs = torch.tensor([self.lang2id.get(cut_language(c), -1) for c in cuts], dtype=torch.int64)
        batch = {
            "features": feats,
            "feature_lens": feat_lens.to(torch.int64),
            "texts": texts,
            "tokens": tokens,
            "source_texts": sources,
            "languages": langs,
            "cut_ids": [c.id for c in cuts],
            "cuts": cuts,
        }
        with_video = [self.video and c.has_custom(VIDEO_FIELD) for c in cuts]
        if any(with_video):
            if not all(with_video):
                missing = next(c.id for c, v in zip(cuts, with_video) if not v)
                raise ValueError(f"cut {missing} has no custom['{VIDEO_FIELD}'] but others of its batch have")
            video, video_lens = collate_custom_field(cuts, VIDEO_FIELD, pad_value=0)
            batch["video"] = video.to(torch.uint8)  # lhotse promotes uint8 to int64 when it pads
            batch["video_lens"] = video_lens.to(torch.int64)
        return batch


def make_spec_augment(num_feature_masks: int = 2, features_mask_size: int = 27, num_frame_masks: int = 10,
                      frames_mask_size: int = 100, time_warp_factor: int = 80) -> SpecAugment:
    """SpecAugment as icefall's recipes use it (lhotse implementation)."""
    return SpecAugment(
        time_warp_factor=time_warp_factor,
        num_feature_masks=num_feature_masks,
        features_mask_size=features_mask_size,
        num_frame_masks=num_frame_masks,
        frames_mask_size=frames_mask_size,
    )


def make_sampler(
    cuts: CutSet,
    max_duration: float,
    *,
    shuffle: bool,
    num_buckets: int = 10,
    seed: int = 0,
    world_size: int = 1,
    rank: int = 0,
    drop_last: bool = False,
) -> DynamicBucketingSampler:
    """Duration-bucketed batches of at most ``max_duration`` seconds of audio (resumable via state_dict).

    ``world_size``/``rank`` shard the batches for DDP training; the defaults give one process the whole set
    (lhotse would otherwise read WORLD_SIZE/RANK from the environment under torchrun, and a validation or
    decoding pass would silently see 1/world_size of the set).

    Sets too small to bucket (fewer than 6 cuts) get lhotse's plain SimpleCutSampler with the same contract.
    """
    if cuts.is_lazy:  # large manifests and Shar shards: bucketed while streaming, never loaded whole
        # the bucket edges come from the first 10k cuts, as lhotse estimates them; fewer buckets for a small set
        seen = sum(1 for _ in itertools.islice(cuts, 10000))
        return DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=shuffle,
                                       num_buckets=max(2, min(num_buckets, seen // 3)), seed=seed,
                                       world_size=world_size, rank=rank, drop_last=drop_last)
    if len(cuts) < 6:
        return SimpleCutSampler(cuts, max_duration=max_duration, shuffle=shuffle, seed=seed,
                                world_size=world_size, rank=rank, drop_last=drop_last)
    warnings.filterwarnings("ignore", message="You are using DynamicBucketingSampler with an eagerly read CutSet")
    return DynamicBucketingSampler(
        cuts,
        max_duration=max_duration,
        shuffle=shuffle,
        num_buckets=max(2, min(num_buckets, len(cuts) // 3)),  # lhotse needs >= 2; keep buckets non-trivial
        seed=seed,
        world_size=world_size,
        rank=rank,
        drop_last=drop_last,
    )


def make_dataloader(dataset: AsrDataset, sampler, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """DataLoader over sampler batches. It gets its own RNG: creating an iterator must not draw from the global
    torch RNG, or a resumed run (which creates one more iterator) would diverge from an uninterrupted one."""
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(0),
    )


def iterate_batches(cuts: CutSet, max_duration: float, target: str = "text"):
    """Batches of features and references (``target``: "text" or "translation") in a fixed order, for decoding."""
    sampler = make_sampler(cuts, max_duration, shuffle=False, num_buckets=2)
    yield from make_dataloader(AsrDataset(target=target, video=False), sampler)
