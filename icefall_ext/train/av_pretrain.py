"""Audio-visual pre-training (``train --pretrain av``) of an :class:`~icefall_ext.pretrain.av_mae.AvPretrainModel`:
the objective, and the command-line options that build its ``"av"`` model config entry.

Batches are the trainer's speech batches whose cuts carry ``custom["video_frames"]`` (uint8 (T, H, W) at 25 fps;
:class:`~icefall_ext.data.dataset.AsrDataset` adds ``video`` / ``video_lens``); transcripts are ignored. The model
returns means (MAE per masked unit, CLR per clip); the loss handed to the trainer is N x the mean, so that the
trainer's division by the utterances of all ranks gives the mean. Logged: ``mae_audio``, ``mae_video``, ``clr``,
in-batch ``a2v_acc``, both masked fractions.

Validation: the MAE losses with masks drawn from a fixed generator (the same masks at every validation), the CLR
loss of each validation batch, and audio->video (and video->audio) top-1 retrieval over the whole validation set
from clean-pass embeddings of all usable clips (chance: 1 / number of clips, reported as ``retrieval_chance``).
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any, Dict, Sequence, Tuple

import torch

from ..common import str2bool
from ..data.dataset import VIDEO_FIELD, AsrDataset
from .objectives import Objective

PARTS = ("mae_audio", "mae_video", "clr", "a2v_acc", "audio_masked_fraction", "video_masked_fraction")

# --preset size -> default --video-preset
VIDEO_PRESET_FOR_SIZE = {"tiny": "tiny", "mini": "mini", "medium": "base"}


class AvPretrainObjective(Objective):
    """MAE and/or CLR of paired audio and video (see the module docstring)."""

    name = "av"
    video = True

    @staticmethod
    def inputs(trainer, batch: Dict) -> Tuple[torch.Tensor, ...]:
        if "video" not in batch:
            raise ValueError(f"--pretrain av needs cuts with custom['{VIDEO_FIELD}'] (cut {batch['cut_ids'][0]} "
                             "has none)")
        return tuple(batch[k].to(trainer.device) for k in ("features", "feature_lens", "video", "video_lens"))

    def loss(self, trainer, model, batch, labels):
        feats, lens, video, video_lens = self.inputs(trainer, batch)
        with trainer.autocast():
            out = model(feats, lens, video, video_lens)
        parts = {k: float(out[k].detach()) for k in PARTS if k in out}
        core = getattr(model, "module", model)  # DDP wraps the model
        parts["frames"] = float(lens.sum()) / core.encoder.subsampling_factor
        return out["loss"] * feats.shape[0], parts

    def validate(self, trainer):
        model = trainer.model
        dataset = AsrDataset(None, trainer.languages)
        generator = torch.Generator().manual_seed(0)  # the same masks at every validation
        sums: Dict[str, float] = {}
        audio, vision = [], []
        batches = 0
        for batch in self.validation_batches(trainer, dataset):
            feats, lens, video, video_lens = self.inputs(trainer, batch)
            with trainer.autocast():
                out = model(feats, lens, video, video_lens, generator=generator)
                if model.uses_clr:
                    a, v, usable = model.embed(feats, lens, video, video_lens)
                    audio.append(a[usable].float().cpu())
                    vision.append(v[usable].float().cpu())
            for part in ("mae_audio", "mae_video", "clr"):  # means -> sums over the set's units
                count_key = "clr_count" if part == "clr" else f"{part}_count"
                if part in out:
                    count = float(out[count_key])
                    sums[part] = sums.get(part, 0.0) + float(out[part]) * count
                    sums[count_key] = sums.get(count_key, 0.0) + count
            for key in ("audio_masked_fraction", "video_masked_fraction"):
                if key in out:
                    sums[key] = sums.get(key, 0.0) + float(out[key])
            batches += 1
        result: Dict[str, Any] = {}
        for part in ("mae_audio", "mae_video", "clr"):
            count = sums.get("clr_count" if part == "clr" else f"{part}_count", 0.0)
            if count:
                result[f"{part}_loss"] = sums[part] / count
        for key in ("audio_masked_fraction", "video_masked_fraction"):
            if key in sums:
                result[key] = sums[key] / max(1, batches)
        losses = []
        if model.uses_mae:
            losses.append(result.get("mae_audio_loss", 0.0) + model.video_weight * result.get("mae_video_loss", 0.0))
        if model.uses_clr:
            losses.append(result.get("clr_loss", 0.0))
        result["loss"] = sum(losses) / max(1, len(losses))
        if audio:
            result.update(retrieval(torch.cat(audio), torch.cat(vision)))
        return result

    def describe(self, result):
        text = f"loss {result['loss']:.3f}"
        if "mae_audio_loss" in result:
            text += (f"; MAE audio {result['mae_audio_loss']:.3f} (masked {result['audio_masked_fraction']:.2f}), "
                     f"video {result['mae_video_loss']:.3f} (masked {result['video_masked_fraction']:.2f})")
        if "clr_loss" in result:
            text += f"; CLR {result['clr_loss']:.3f}"
        if "a2v_top1" in result:
            text += (f"; retrieval over {result['retrieval_clips']} clips: audio->video top-1 "
                     f"{100 * result['a2v_top1']:.1f}%, video->audio {100 * result['v2a_top1']:.1f}% (chance "
                     f"{100 * result['retrieval_chance']:.1f}%)")
        return text


def retrieval(audio: torch.Tensor, video: torch.Tensor) -> Dict[str, Any]:
    """Top-1 retrieval accuracies of L2-normalised clip embeddings (N, D) (row i of both from clip i) among all N
    clips, and chance (1 / N)."""
    scores = audio @ video.t()
    target = torch.arange(len(scores))
    return {"a2v_top1": float((scores.argmax(1) == target).float().mean()),
            "v2a_top1": float((scores.argmax(0) == target).float().mean()),
            "retrieval_chance": 1.0 / max(1, len(scores)), "retrieval_clips": len(scores)}


# ---------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--av-*`` / ``--video-*`` options of ``train --pretrain av``."""
    from ..models.video_vit import VIDEO_PRESETS
    from ..pretrain.av_mae import CLR_FORMS, CLR_HEADS, CLR_PASSES, MODES

    g = p.add_argument_group("audio-visual pre-training (--pretrain av; Jain et al. 2024: MAE and/or contrastive "
                             "learning of the audio encoder with a video ViT on cuts with custom['video_frames'])")
    g.add_argument("--av-objective", choices=MODES, default="mae+clr",
                   help="mae+clr: the mean of both losses (default: %(default)s)")
    g.add_argument("--av-mask-prob", type=float, default=0.6, help="fraction of audio encoder frames masked")
    g.add_argument("--av-video-mask-prob", type=float, default=0.6, help="fraction of video tubelets masked")
    g.add_argument("--av-noise-std", type=float, default=0.1,
                   help="masked fbank frames become N(0, std) noise (0: zeros; default: %(default)s)")
    g.add_argument("--av-norm-pix", type=str2bool, default=True,
                   help="video MAE targets normalised per patch (MAE's norm_pix_loss; default: %(default)s)")
    g.add_argument("--av-temperature", type=float, default=0.1, help="CLR softmax temperature (default: %(default)s)")
    g.add_argument("--av-learn-temperature", type=str2bool, default=False,
                   help="learn the temperature (log tau, starting at --av-temperature; default: %(default)s)")
    g.add_argument("--av-clr-form", choices=CLR_FORMS, default="standard",
                   help="standard: positive in the InfoNCE denominator; paper: Eq. 2, negatives only")
    g.add_argument("--av-clr-pass", choices=CLR_PASSES, default="clean",
                   help="mae+clr: CLR on a second, unmasked pass (default) or on the masked MAE pass (cheaper, "
                        "learns retrieval worse)")
    g.add_argument("--av-clr-head", choices=CLR_HEADS, default="batchnorm",
                   help="batchnorm: pooled features standardised over the batch before the CLR projection (keeps "
                        "the encoders from collapsing to one output); linear: projected as they are "
                        "(default: %(default)s)")
    g.add_argument("--video-preset", choices=sorted(VIDEO_PRESETS), default=None,
                   help="size of the video ViT and the MAE decoder (default: after --preset: tiny, mini; "
                        "medium -> base, the paper's)")
    g.add_argument("--av-frame-size", type=int, nargs="+", default=None,
                   help="H [W] of the ViT's input; frames of another size are resized (default: the size of the "
                        "first training cut's frames)")
    g.add_argument("--av-overrides", default="{}",
                   help="JSON dict merged into the model config's 'av' entry (e.g. decoder_layers, proj_dim, "
                        "video_weight, video: {...})")


def video_shape(paths: Sequence[str]) -> Tuple[int, int, int]:
    """(T, H, W) of the video frames of the first training cut; ValueError when it has none."""
    from .trainer import load_cuts

    for cut in itertools.islice(load_cuts(list(paths), lazy=True), 1):
        if not cut.has_custom(VIDEO_FIELD):
            raise ValueError(f"--pretrain av: training cut {cut.id} has no custom['{VIDEO_FIELD}'] (uint8 (T, H, W) "
                             f"video frames at 25 fps); prepare the cuts with video (egs/lrs3)")
        return tuple(getattr(cut, VIDEO_FIELD).shape)
    raise ValueError(f"--pretrain av: no training cuts in {', '.join(paths)}")


def model_config_entry(args: argparse.Namespace, train_cuts: Sequence[str]) -> Dict[str, Any]:
    """The ``"av"`` entry of a new ``--pretrain av`` run's model config; ValueError for cuts without video or a bad
    option."""
    import json

    from ..pretrain.av_mae import av_config

    if args.av_frame_size:
        if len(args.av_frame_size) > 2:
            raise ValueError("--av-frame-size takes H or H W")
        frame_size = (args.av_frame_size * 2)[:2]
        video_shape(train_cuts)
    else:
        frame_size = list(video_shape(train_cuts)[1:])
    preset = args.video_preset or VIDEO_PRESET_FOR_SIZE.get(args.preset.partition("-")[2], "mini")
    try:
        overrides = json.loads(args.av_overrides)
    except json.JSONDecodeError as e:
        raise ValueError(f"--av-overrides is not JSON: {e}") from None
    settings = dict(mode=args.av_objective, mask_prob=args.av_mask_prob, video_mask_prob=args.av_video_mask_prob,
                    noise_std=args.av_noise_std, norm_pix=args.av_norm_pix, temperature=args.av_temperature,
                    learn_temperature=args.av_learn_temperature, clr_form=args.av_clr_form,
                    clr_pass=args.av_clr_pass, clr_head=args.av_clr_head)
    return av_config(preset, frame_size, **{**settings, **overrides})


def has_video(cut) -> bool:
    return cut.has_custom(VIDEO_FIELD)


def describe_config(av: Dict[str, Any]) -> str:
    """A log line for an ``"av"`` config entry."""
    video = av["video"]
    return (f"AV pre-training: {av.get('mode', 'mae+clr')}; video ViT on {video['frame_size'][0]}x"
            f"{video['frame_size'][1]} frames, tubelets {video['tubelet_frames']}x{video['patch_size']}x"
            f"{video['patch_size']}, {video['num_layers']} x {video['dim']}; MAE decoder {av['decoder_layers']} x "
            f"{av['decoder_dim']}")
