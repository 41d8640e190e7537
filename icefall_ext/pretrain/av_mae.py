"""Audio-visual pre-training of the audio encoder (Jain et al. 2024, "Multi-Stage Multi-Modal Pre-Training for
ASR"): masked autoencoding (MAE), contrastive learning (CLR), or both ("mae+clr": the mean of the two losses).

The audio encoder (``encoder``: the ASR encoder that ``train --init-from`` copies) and a
:class:`~icefall_ext.models.video_vit.VideoViT` (``video_encoder``) see the same clips: fbank at 10 ms, video at
25 fps, so that one audio encoder frame (4 fbank frames) spans one video frame.

**MAE.** Each utterance's encoder frames, i.e. groups of ``subsampling_factor`` fbank frames, are masked with
probability ``mask_prob`` and each clip's video tubelets with ``video_mask_prob``: exactly floor(p n) or
floor(p n) + 1 of the n valid units (stochastic rounding, so the expected fraction is p), drawn uniformly
(MAE's per-sample shuffle). Masked fbank frames are replaced by N(0, ``noise_std``) noise as BEST-RQ does (zeros
with ``noise_std`` 0); masked tubelets by the ViT's learned mask token (SimMIM style: both encoders still see every
position, see :mod:`~icefall_ext.models.video_vit`). A shared light decoder (``decoder_layers`` pre-norm
Transformer layers of ``decoder_dim``; paper 4 x 512) reads the concatenation of the projected audio encoder output
and video tokens (+ a modality embedding, sinusoidal time on a shared timeline in video frames, + a learned spatial
embedding for video) and reconstructs both: per audio frame the group's stacked fbank frames normalised per
utterance and feature (BEST-RQ's :func:`~icefall_ext.pretrain.best_rq.normalise_per_utterance`), per tubelet its
pixels (each patch normalised to mean 0 / std 1 over its pixels as MAE's ``norm_pix_loss``, with ``norm_pix``). The
loss is the mean squared error on masked positions only, per modality (``mae_audio``, ``mae_video``), summed
(video weighted by ``video_weight``). The decoder reads the encoders' outputs at all positions: the masked ones saw
only noise / the mask token, so nothing leaks.

**CLR.** InfoNCE between the projected mean-pooled audio encoder output and the projected pooled video embedding
(both L2-normalised) of the same clip vs the other clips of the batch (on each rank its own batch), symmetric:
the mean of the audio->video and video->audio losses. ``clr_form="standard"``: the positive is in the denominator
(CLIP); ``"paper"``: the paper's Eq. 2, whose denominator sums over k != i only. Temperature ``temperature``
(0.1), fixed unless ``learn_temperature`` (then log tau is a parameter, tau >= 0.01). ``clr_head="batchnorm"``
standardises each pooled feature over the batch's clips (BatchNorm without affine parameters, running statistics
at evaluation) before the projection, as SimCLR's and MoCo v3's heads do; ``"linear"`` projects the pooled
vectors as they are. Measured on the mini LRS3 (CLR alone, conformer-mini, ScaledAdam or AdamW): with the linear
head the audio encoder collapses within 50-70 updates to one output for every frame of every clip (frame-to-frame
std 0.3 -> 0.015 around a vector of norm 17), the loss sits at log(batch size) with gradient norms ~1e-3, and what
is learnt after it recovers is who speaks; standardising over the batch removes that common vector, so equal
embeddings are no longer reachable by shrinking what differs between clips. In "mae+clr" CLR runs by
default on a second, unmasked pass of both encoders (``clr_pass="clean"``, 1.4-1.7x the cost of one step of
MAE); ``"masked"`` reuses the MAE pass (no extra pass). Measured on synthetic clips whose mouth follows the audio
energy (tiny models, 300 updates of 8 clips): held-out audio->video top-1 among 32 clips reached 25-50% with the
clean pass, 3-19% with the masked one (chance 3%): with 60% of both inputs masked the pooled embeddings carry
little of the clip, and retrieval, done on clean inputs, sees other inputs than training did. "clr" alone and
retrieval at validation always use the clean pass.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.subsampling import make_pad_mask
from ..models.transformer import TransformerLayer
from ..models.attention_decoder import sinusoidal_embedding
from ..models.video_vit import VIDEO_PRESETS, VideoEncoding, VideoViT
from .best_rq import normalise_per_utterance, stack_frames

MODES = ("mae", "clr", "mae+clr")
CLR_FORMS = ("standard", "paper")
CLR_PASSES = ("masked", "clean")
CLR_HEADS = ("linear", "batchnorm")

# decoder and projection sizes per video preset (``base``: the paper's 4 x 512 decoder)
AV_DECODERS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(decoder_dim=64, decoder_layers=1, decoder_heads=2, proj_dim=64),
    "mini": dict(decoder_dim=128, decoder_layers=2, decoder_heads=4, proj_dim=128),
    "base": dict(decoder_dim=512, decoder_layers=4, decoder_heads=8, proj_dim=256),
}


def random_mask(valid: Tensor, prob: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """(N, L) bool mask of ``prob`` of each row's valid positions, drawn uniformly: floor(p n) of the n valid
    positions, plus one with probability frac(p n), so that the expected masked fraction is exactly ``prob``."""
    n_valid = valid.sum(-1).double()
    draws = torch.rand(valid.shape[0], valid.shape[1] + 1, generator=generator, dtype=torch.float64)
    draws = draws.to(valid.device)
    want = n_valid * prob
    count = want.floor() + (draws[:, -1] < want - want.floor()).double()
    scores = draws[:, :-1].masked_fill(~valid, 2.0)  # padding ranks last
    ranks = scores.argsort(-1).argsort(-1)
    return (ranks < count[:, None]) & valid


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Sum over the positions of ``mask`` (leading dims) of the mean squared error over the last dim, and how many
    positions that is (float32)."""
    error = ((prediction.float() - target.float()) ** 2).mean(-1)
    return (error * mask.to(error.dtype)).sum(), mask.sum().float()


def info_nce(audio: Tensor, video: Tensor, temperature: Tensor | float, form: str = "standard") -> Dict[str, Tensor]:
    """Symmetric InfoNCE of L2-normalised embeddings (N, D), row i of both from the same clip.

    s_ik = a_i . v_k / tau; audio->video loss of clip i: -log exp(s_ii) / sum_k exp(s_ik) ("standard", k over all
    clips) or with k != i ("paper"); video->audio the same over the columns. Returns the means over clips ("a2v",
    "v2a"), their mean ("loss") and the in-batch top-1 retrieval accuracies ("a2v_acc", "v2a_acc")."""
    if form not in CLR_FORMS:
        raise ValueError(f"clr form must be one of {CLR_FORMS}, not {form!r}")
    logits = (audio.float() @ video.float().t()) / temperature
    positive = logits.diagonal()
    if form == "paper":
        logits = logits.masked_fill(torch.eye(len(logits), dtype=torch.bool, device=logits.device), float("-inf"))
    a2v = (logits.logsumexp(1) - positive).mean()
    v2a = (logits.logsumexp(0) - positive).mean()
    target = torch.arange(len(positive), device=positive.device)
    with torch.no_grad():
        scores = audio.float() @ video.float().t()
        a2v_acc = (scores.argmax(1) == target).float().mean()
        v2a_acc = (scores.argmax(0) == target).float().mean()
    return {"loss": 0.5 * (a2v + v2a), "a2v": a2v, "v2a": v2a, "a2v_acc": a2v_acc, "v2a_acc": v2a_acc}


class MaeDecoder(nn.Module):
    """Shared decoder over [audio frames; video tokens] -> reconstructed stacked fbank groups and tubelet pixels."""

    def __init__(self, audio_dim: int, video_dim: int, audio_out: int, video_out: int, num_patches: int,
                 tubelet_frames: int, *, decoder_dim: int = 128, decoder_layers: int = 2, decoder_heads: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.tubelet_frames = tubelet_frames
        self.audio_in = nn.Linear(audio_dim, decoder_dim)
        self.video_in = nn.Linear(video_dim, decoder_dim)
        self.modality = nn.Parameter(torch.randn(2, decoder_dim) * 0.02)
        self.space_pos = nn.Parameter(torch.randn(num_patches, decoder_dim) * 0.02)
        self.layers = nn.ModuleList(TransformerLayer(decoder_dim, decoder_heads, dropout=dropout)
                                    for _ in range(decoder_layers))
        self.norm = nn.LayerNorm(decoder_dim)
        self.audio_out = nn.Linear(decoder_dim, audio_out)
        self.video_out = nn.Linear(decoder_dim, video_out)

    def forward(self, audio: Tensor, audio_lens: Tensor, video: VideoEncoding) -> Tuple[Tensor, Tensor]:
        """Audio encoder output (B, Ta, Da) + lengths, video encoding (B, T', P, Dv) -> predictions
        (B, Ta, audio_out) and (B, T', P, video_out)."""
        b, ta = audio.shape[:2]
        _, tv, p, _ = video.tokens.shape
        d = self.modality.shape[1]
        # one timeline in video frames (= audio encoder frames); a tubelet sits at the centre of its frames
        a_time = sinusoidal_embedding(torch.arange(ta, device=audio.device).float(), d)
        v_time = sinusoidal_embedding(torch.arange(tv, device=audio.device) * self.tubelet_frames
                                      + (self.tubelet_frames - 1) / 2, d)
        a = self.audio_in(audio) + (self.modality[0] + a_time).to(audio.dtype)
        v = self.video_in(video.tokens) + (self.modality[1] + v_time[:, None] + self.space_pos[None]).to(audio.dtype)
        _, v_valid = video.flat()
        x = torch.cat([a, v.reshape(b, tv * p, d)], dim=1)
        pad = torch.cat([make_pad_mask(audio_lens, ta), ~v_valid], dim=1)
        for layer in self.layers:
            x = layer(x, pad)
        x = self.norm(x)
        return self.audio_out(x[:, :ta]), self.video_out(x[:, ta:]).reshape(b, tv, p, -1)


class AvPretrainModel(nn.Module):
    """Audio encoder + video ViT pre-trained with MAE, CLR or both (see the module docstring).

    ``forward(feats, feat_lens, video, video_lens, generator=None)`` returns ``"loss"`` (a mean: the objective
    scales it by the clips) and its parts: ``mae_audio`` / ``mae_video`` (mean squared error per masked frame /
    tubelet) with counts and masked fractions, ``clr`` (+ ``clr_a2v``, ``clr_v2a``), ``a2v_acc`` / ``v2a_acc``
    (in-batch top-1 retrieval) and ``clr_count`` (clips used: those with audio and video frames). Parameter names
    other than ``encoder.*`` (``video_encoder``, ``mae_decoder``, ``clr_*``) appear in no ASR / ST model.
    """

    def __init__(self, encoder: nn.Module, video_encoder: VideoViT, feature_dim: int, *, mode: str = "mae+clr",
                 mask_prob: float = 0.6, video_mask_prob: float = 0.6, noise_std: float = 0.1,
                 norm_pix: bool = True, video_weight: float = 1.0, decoder_dim: int = 128, decoder_layers: int = 2,
                 decoder_heads: int = 4, proj_dim: int = 128, temperature: float = 0.1,
                 learn_temperature: bool = False, clr_form: str = "standard", clr_pass: str = "clean",
                 clr_head: str = "linear") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if clr_form not in CLR_FORMS or clr_pass not in CLR_PASSES or clr_head not in CLR_HEADS:
            raise ValueError(f"clr_form must be one of {CLR_FORMS}, clr_pass one of {CLR_PASSES} and clr_head one "
                             f"of {CLR_HEADS}")
        if not (0.0 < mask_prob < 1.0 and 0.0 < video_mask_prob < 1.0) or temperature <= 0:
            raise ValueError("mask probabilities must be in (0, 1) and the temperature > 0")
        self.encoder = encoder
        self.video_encoder = video_encoder
        self.mode, self.feature_dim, self.stack = mode, feature_dim, encoder.subsampling_factor
        self.mask_prob, self.video_mask_prob, self.noise_std = mask_prob, video_mask_prob, noise_std
        self.norm_pix, self.video_weight = norm_pix, video_weight
        self.clr_form, self.clr_pass = clr_form, clr_pass
        self.mae_decoder = None
        if self.uses_mae:
            self.mae_decoder = MaeDecoder(encoder.output_dim, video_encoder.output_dim, feature_dim * self.stack,
                                          video_encoder.patch_dim, video_encoder.num_patches,
                                          video_encoder.tubelet_frames, decoder_dim=decoder_dim,
                                          decoder_layers=decoder_layers, decoder_heads=decoder_heads)
        self.clr_audio_proj = self.clr_video_proj = self.clr_log_temperature = None
        self.clr_audio_norm = self.clr_video_norm = None
        self.temperature = temperature
        if self.uses_clr:
            self.clr_audio_proj = nn.Linear(encoder.output_dim, proj_dim)
            self.clr_video_proj = nn.Linear(video_encoder.output_dim, proj_dim)
            if clr_head == "batchnorm":
                self.clr_audio_norm = nn.BatchNorm1d(encoder.output_dim, affine=False)
                self.clr_video_norm = nn.BatchNorm1d(video_encoder.output_dim, affine=False)
            if learn_temperature:
                self.clr_log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def uses_mae(self) -> bool:
        return self.mode in ("mae", "mae+clr")

    @property
    def uses_clr(self) -> bool:
        return self.mode in ("clr", "mae+clr")

    def clr_temperature(self) -> Tensor | float:
        if self.clr_log_temperature is None:
            return self.temperature
        return self.clr_log_temperature.clamp(min=math.log(0.01)).exp()

    # ------------------------------------------------------------------ masks and targets
    def audio_valid(self, feat_lens: Tensor, num_groups: int) -> Tensor:
        """(N, G) bool: the whole stacked groups of each utterance."""
        return torch.arange(num_groups, device=feat_lens.device)[None, :] < (feat_lens // self.stack)[:, None]

    def draw_masks(self, feat_lens: Tensor, num_frames: int, video_lens: Tensor, num_tubelets: int,
                   generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """(N, T // stack) audio group mask and (N, T', P) video tubelet mask."""
        audio = random_mask(self.audio_valid(feat_lens, num_frames // self.stack), self.mask_prob, generator)
        p = self.video_encoder.num_patches
        lens = self.video_encoder.token_lens(video_lens).clamp(max=num_tubelets)
        valid = (torch.arange(num_tubelets, device=lens.device)[None, :] < lens[:, None])[..., None].expand(-1, -1, p)
        video = random_mask(valid.reshape(len(lens), -1), self.video_mask_prob, generator)
        return audio, video.reshape(len(lens), num_tubelets, p)

    def mask_features(self, x: Tensor, audio_mask: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Features with the frames of masked groups replaced by N(0, noise_std) noise."""
        frames = audio_mask.repeat_interleave(self.stack, dim=1)
        frames = F.pad(frames, (0, x.shape[1] - frames.shape[1]))
        noise = torch.randn(x.shape, generator=generator).to(x) * self.noise_std
        return torch.where(frames[..., None], noise, x)

    def audio_targets(self, x: Tensor, x_lens: Tensor) -> Tensor:
        """(N, T // stack, F * stack): stacked groups of the per-utterance normalised features."""
        return stack_frames(normalise_per_utterance(x.float(), x_lens), x_lens, self.stack)[0]

    def video_targets(self, pixels: Tensor) -> Tensor:
        """(N, T', P, tubelet pixels): each patch's pixels, normalised per patch with ``norm_pix``."""
        patches = self.video_encoder.patchify(pixels.float())
        if self.norm_pix:
            mean = patches.mean(-1, keepdim=True)
            var = patches.var(-1, keepdim=True)
            patches = (patches - mean) / (var + 1e-6).sqrt()
        return patches

    # ------------------------------------------------------------------ passes
    def clr_embeddings(self, enc: Tensor, enc_lens: Tensor, video: VideoEncoding) -> Tuple[Tensor, Tensor, Tensor]:
        """L2-normalised projected audio and video clip embeddings (N, proj_dim) and which clips are usable
        (audio frames and valid tubelets)."""
        weights = (~make_pad_mask(enc_lens, enc.shape[1])).to(enc.dtype)[..., None]
        pooled = (enc * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        usable = (enc_lens > 0) & (video.lens > 0)
        audio = F.normalize(self.clr_audio_proj(self._standardise(self.clr_audio_norm, pooled, usable)).float(), dim=-1)
        vision = F.normalize(self.clr_video_proj(self._standardise(self.clr_video_norm, video.pooled, usable)).float(),
                             dim=-1)
        return audio, vision, usable

    def _standardise(self, norm: Optional[nn.BatchNorm1d], pooled: Tensor, usable: Tensor) -> Tensor:
        """``pooled`` through the batch norm of the ``batchnorm`` head, its batch statistics from the usable clips
        only (the others come out as zeros); a training batch of fewer than 2 usable clips uses the running
        statistics."""
        if norm is None:
            return pooled
        if self.training and int(usable.sum()) < 2:
            return F.batch_norm(pooled.float(), norm.running_mean, norm.running_var, training=False,
                                eps=norm.eps).to(pooled.dtype)
        out = torch.zeros_like(pooled)
        out[usable] = norm(pooled[usable].float()).to(pooled.dtype)
        return out

    @torch.no_grad()
    def embed(self, x: Tensor, x_lens: Tensor, video: Tensor, video_lens: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Clean-pass (unmasked) CLR embeddings of a batch, for retrieval: audio, video (N, proj_dim), usable."""
        if not self.uses_clr:
            raise RuntimeError("a model pre-trained without CLR has no clip embeddings")
        enc, enc_lens = self.encoder(x, x_lens)
        return self.clr_embeddings(enc, enc_lens, self.video_encoder(video, video_lens))

    def forward(self, x: Tensor, x_lens: Tensor, video: Tensor, video_lens: Tensor,
                generator: Optional[torch.Generator] = None, audio_mask: Optional[Tensor] = None,
                video_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Features (N, T, F), lengths, uint8 video (N, T_v, H, W), lengths -> losses and metrics (see the class
        docstring). ``generator`` draws the masks and noise; ``audio_mask`` (N, T // stack) / ``video_mask``
        (N, T', P) override the drawn masks."""
        pixels = self.video_encoder.prepare(video, video_lens)
        out: Dict[str, Tensor] = {}
        losses = []
        enc = venc = None
        if self.uses_mae:
            num_tubelets = pixels.shape[1] // self.video_encoder.tubelet_frames
            drawn_audio, drawn_video = self.draw_masks(x_lens, x.shape[1], video_lens, num_tubelets, generator)
            audio_mask = drawn_audio if audio_mask is None else audio_mask
            video_mask = drawn_video if video_mask is None else video_mask
            enc, enc_lens = self.encoder(self.mask_features(x, audio_mask, generator), x_lens)
            venc = self.video_encoder.encode(pixels, video_lens, video_mask)
            pred_audio, pred_video = self.mae_decoder(enc, enc_lens, venc)
            targets = self.audio_targets(x, x_lens)
            t = min(enc.shape[1], targets.shape[1])
            selected = audio_mask[:, :t] & (torch.arange(t, device=x.device)[None, :] < enc_lens[:, None])
            a_sum, a_count = masked_mse(pred_audio[:, :t], targets[:, :t], selected)
            v_sum, v_count = masked_mse(pred_video, self.video_targets(pixels), video_mask)
            out.update(mae_audio=a_sum / a_count.clamp(min=1), mae_audio_count=a_count,
                       mae_video=v_sum / v_count.clamp(min=1), mae_video_count=v_count)
            with torch.no_grad():
                a_valid = self.audio_valid(x_lens, audio_mask.shape[1])
                v_valid = self.video_encoder.token_lens(video_lens).clamp(max=num_tubelets)
                out["audio_masked_fraction"] = audio_mask[a_valid].float().mean() if a_valid.any() \
                    else torch.zeros(())
                out["video_masked_fraction"] = video_mask.sum().float() / (
                    v_valid.sum() * self.video_encoder.num_patches).clamp(min=1)
            out["mae"] = out["mae_audio"] + self.video_weight * out["mae_video"]
            losses.append(out["mae"])
        if self.uses_clr:
            if enc is None or self.clr_pass == "clean":
                enc, enc_lens = self.encoder(x, x_lens)
                venc = self.video_encoder.encode(pixels, video_lens)
            audio, vision, usable = self.clr_embeddings(enc, enc_lens, venc)
            if int(usable.sum()) >= 2:
                clr = info_nce(audio[usable], vision[usable], self.clr_temperature(), self.clr_form)
                out.update(clr=clr["loss"], clr_a2v=clr["a2v"], clr_v2a=clr["v2a"], a2v_acc=clr["a2v_acc"],
                           v2a_acc=clr["v2a_acc"])
            else:  # no negatives: no contrastive loss for this batch
                zero = audio.sum() * 0.0 + vision.sum() * 0.0
                out.update(clr=zero, clr_a2v=zero.detach(), clr_v2a=zero.detach(), a2v_acc=zero.detach(),
                           v2a_acc=zero.detach())
            out["clr_count"] = usable.sum().float()
            losses.append(out["clr"])
        out["loss"] = torch.stack(losses).mean()  # mae+clr: the mean of the two, as the paper
        return out


def build_av_model(encoder: nn.Module, feature_dim: int, av: Dict[str, Any]) -> AvPretrainModel:
    """The model of a ``"pretrain": "av"`` config entry ``av``: ``{"video": VideoViT keyword arguments (with
    ``frame_size``), ...AvPretrainModel keyword arguments}``."""
    kwargs = dict(av)
    video = dict(kwargs.pop("video"))
    return AvPretrainModel(encoder, VideoViT(**video), feature_dim, **kwargs)


def av_config(video_preset: str, frame_size, **settings: Any) -> Dict[str, Any]:
    """A ``"av"`` config entry: the ViT of ``video_preset`` at ``frame_size`` (H, W), its size's decoder and
    projection, then ``settings`` (any :class:`AvPretrainModel` keyword, or ``video`` to update the ViT's)."""
    if video_preset not in VIDEO_PRESETS:
        raise ValueError(f"unknown video preset {video_preset!r}; known: {', '.join(VIDEO_PRESETS)}")
    video = dict(VIDEO_PRESETS[video_preset], frame_size=list(frame_size), **settings.pop("video", {}))
    return dict(AV_DECODERS[video_preset], video=video, **settings)
