"""Train an ASR model (CTC, transducer, or both; optional language-ID head; optional slimIPL), or pre-train an
encoder with BEST-RQ on untranscribed audio (``--pretrain best-rq``; fine-tune it later with ``--init-from``), with
mSLAM (``--pretrain mslam``) or with video (``--pretrain av``).

Examples::

    python -m icefall_ext.bin.train --exp-dir exp/base --lang-dir data/lang_char \\
        --train-cuts data/fbank/cv_cuts_train.jsonl.gz --valid-cuts data/fbank/cv_cuts_dev.jsonl.gz \\
        --preset conformer-mini --heads ctc --lid-scale 1.0 --max-duration 300 --num-epochs 10

    # 4 GPUs on one machine (DDP through torchrun); several machines: call torchrun yourself with
    # --nnodes/--rdzv-endpoint and this module
    python -m icefall_ext.bin.train --world-size 4 --dtype bfloat16 ...

    # BEST-RQ pre-training (no token table needed; transcripts, if any, are ignored), then CTC fine-tuning
    python -m icefall_ext.bin.train --pretrain best-rq --bestrq-codebooks 16 --exp-dir exp/bestrq \
        --train-cuts data/fbank/unlabelled_cuts.jsonl.gz --valid-cuts data/fbank/dev_cuts.jsonl.gz ...
    python -m icefall_ext.bin.train --init-from exp/bestrq --exp-dir exp/ctc --lang-dir data/lang_char ...

    # mSLAM joint speech-text pre-training (BEST-RQ on all training cuts + span-masked character LM on text-only
    # sentences + CTC on the cuts' transcripts, all through one encoder; icefall_ext.train.mslam), then ST from it
    # (the encoder, the text front end and the tied character layer are copied; the ST model keeps a text path)
    python -m icefall_ext.bin.train --pretrain mslam --exp-dir exp/mslam --source-lang-dir data/lang_char \\
        --mslam-text data/text/fr.txt --mslam-text-scale 0.3 --mslam-ctc-scale 0.03 --train-cuts ... --valid-cuts ...
    python -m icefall_ext.bin.train --task st --init-from exp/mslam --source-lang-dir data/lang_char ...

    # audio-visual pre-training (cuts with custom["video_frames"]; MAE and/or contrastive, icefall_ext.train.
    # av_pretrain), then ASR on the frozen audio encoder with a small trainable decoder in the CTC head that reads
    # a learnt mix of all the encoder's layers (layer_mix, icefall_ext.models.layer_mix)
    python -m icefall_ext.bin.train --pretrain av --av-objective mae+clr --exp-dir exp/av --train-cuts ... \\
        --valid-cuts ...
    python -m icefall_ext.bin.train --init-from exp/av --heads ctc --freeze-encoder true \\
        --model-overrides '{"ctc_head_layers": 2, "layer_mix": true}' --exp-dir exp/ctc --lang-dir data/lang_char ...

    # speech translation: --lang-dir holds the target BPE; --source-lang-dir the source characters (auxiliary CTC
    # weighted by --ctc-scale, and the text input of joint ST + MT with --mt-scale 5.0 [--mt-text pairs.tsv])
    python -m icefall_ext.bin.train --task st --exp-dir exp/st --lang-dir data/lang_bpe_en \
        --source-lang-dir data/lang_char --ctc-scale 0.3 --train-cuts data/fbank/covost2_cuts_train.jsonl.gz ...

A rerun with the same --exp-dir resumes exactly from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..common import atomic_write_text, die, setup_logging, str2bool
from ..train.av_pretrain import add_arguments as add_av_arguments
from ..train.precision import DTYPES
from ..train.trainer import TrainConfig

# TrainConfig fields whose values come from a fixed set
CHOICES = {"dtype": DTYPES}

logger = logging.getLogger("icefall_ext.train")

# --heads -> (CTC head, transducer heads); "lid": a language-ID classifier only (needs --lid-scale > 0)
HEADS = {"ctc": (True, False), "transducer": (False, True), "hybrid": (True, True), "lid": (False, False)}

# seconds per encoder output frame: 10 ms feature frames subsampled x4 (--attention-chunk-seconds -> frames)
ENCODER_FRAME_SECONDS = 0.04


def add_attention_args(p: argparse.ArgumentParser, default_help: str) -> None:
    """``--attention*``: restricted self-attention of a non-causal Conformer for long-form audio (USM §2.4)."""
    g = p.add_argument_group("restricted self-attention of a non-causal Conformer for long-form audio (USM §2.4)")
    g.add_argument("--attention", choices=["full", "chunk", "local"], default=None,
                   help="chunk: attention within non-overlapping chunks only; local: a sliding window; full: "
                        f"unrestricted (default: {default_help})")
    g.add_argument("--attention-chunk-seconds", type=float, default=8.0,
                   help="chunk duration of --attention chunk (encoder frames of 40 ms; default: %(default)s)")
    g.add_argument("--attention-left-frames", type=int, default=128,
                   help="past encoder frames of --attention local (default: %(default)s)")
    g.add_argument("--attention-right-frames", type=int, default=128,
                   help="future encoder frames of --attention local (default: %(default)s)")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("List[str]",):
            p.add_argument(flag, nargs="+", required=f.name == "train_cuts",
                           default=[] if f.name != "train_cuts" else None, help="(list) default: %(default)s")
        elif f.default is dataclasses.MISSING:
            p.add_argument(flag, required=True)
        else:
            kind = {"int": int, "float": float, "bool": str2bool, "str": str}[f.type]
            p.add_argument(flag, type=kind, default=f.default, choices=CHOICES.get(f.name),
                           help="default: %(default)s")
    p.add_argument("--preset", default="conformer-mini", help="model preset, see `python -m icefall_ext.bin.model_info`")
    p.add_argument("--heads", choices=sorted(HEADS), default="ctc",
                   help="output heads of a new model or of an ASR model fine-tuned from a pre-trained (--pretrain) or "
                        "speech-translation checkpoint (its encoder only); ASR --init-from runs keep their "
                        "checkpoint's heads (default: %(default)s)")
    p.add_argument("--model-overrides", default="{}", help="JSON dict merged into the model config")
    p.add_argument("--init-from", default=None,
                   help="checkpoint file or exp dir to start from (fine-tuning); token/language rows are mapped")
    p.add_argument("--architecture-from", default=None,
                   help="checkpoint file or exp dir whose architecture is built with fresh random weights (a "
                        "from-scratch twin of an --init-from run)")
    p.add_argument("--freeze-encoder", type=str2bool, default=False,
                   help="train only the heads (and the adapters, which are not part of the encoder)")
    p.add_argument("--train-heads", type=str2bool, default=True,
                   help="false: freeze the output heads too (with --freeze-encoder true --adapters true only the "
                        "adapters train)")
    g = p.add_argument_group("per-language residual adapters on every encoder block (USM §2.6; one adapter per "
                             "language of <lang-dir>/languages.txt; each utterance is routed by its cut's language)")
    g.add_argument("--adapters", type=str2bool, default=None,
                   help="true: add adapters (zero-initialised: the model's output is unchanged); false: none "
                        "(default: keep --init-from's / --architecture-from's; none for a new model)")
    g.add_argument("--adapter-bottleneck", type=int, default=0,
                   help="adapter inner width B; 0: sized by --adapter-fraction (default: %(default)s)")
    g.add_argument("--adapter-fraction", type=float, default=0.02,
                   help="with --adapter-bottleneck 0: parameters of one language's adapters as a fraction of the "
                        "encoder's (USM: 2.3%%; default: %(default)s)")
    g.add_argument("--adapter-activation", choices=["relu", "gelu"], default="relu",
                   help="non-linearity of new adapters (default: %(default)s)")
    p.add_argument("--task", choices=["asr", "st"], default="asr",
                   help="st: speech translation (encoder + attention decoder) of the cuts' translated_text")
    p.add_argument("--pretrain", choices=["none", "best-rq", "mslam", "av"], default="none",
                   help="self-supervised pre-training objective instead of ASR (default: %(default)s)")
    g = p.add_argument_group("BEST-RQ (--pretrain best-rq; defaults of the BEST-RQ paper as USM uses them)")
    g.add_argument("--bestrq-codebooks", type=int, default=1, help="independent quantisers + softmax heads (USM: 16)")
    g.add_argument("--bestrq-num-codes", type=int, default=8192, help="codewords per codebook")
    g.add_argument("--bestrq-code-dim", type=int, default=16, help="dimension of the random projection")
    g.add_argument("--bestrq-mask-prob", type=float, default=0.01, help="probability that a frame starts a mask")
    g.add_argument("--bestrq-mask-frames", type=int, default=40, help="frames per mask span (10 ms frames)")
    g.add_argument("--bestrq-noise-std", type=float, default=0.1, help="std of the noise in masked frames")
    g.add_argument("--bestrq-norm", choices=["utterance", "vector"], default="utterance",
                   help="target normalisation: each feature dimension over the utterance (default) or each stacked "
                        "vector over its features (pauses then get random codes)")
    g = p.add_argument_group("mSLAM joint speech-text pre-training (--pretrain mslam; its speech loss takes the "
                             "--bestrq-* options, its character table is --source-lang-dir's tokens.txt + [MASK])")
    g.add_argument("--mslam-text", nargs="+", default=[],
                   help="text-only files, one sentence per line (as many sentences per batch as utterances)")
    g.add_argument("--mslam-speech-scale", type=float, default=1.0, help="weight of the BEST-RQ loss")
    g.add_argument("--mslam-text-scale", type=float, default=0.3,
                   help="weight of the span-masked text loss (0: speech only; default: %(default)s)")
    g.add_argument("--mslam-ctc-scale", type=float, default=0.03,
                   help="weight of CTC on the cuts' transcripts through the text-MLM output layer (0: speech + text "
                        "without alignment; default: %(default)s)")
    g.add_argument("--mslam-span", type=int, default=5, help="characters per masked text span (mSLAM: 20)")
    g.add_argument("--mslam-mask-fraction", type=float, default=0.15,
                   help="expected fraction of each sentence's characters that is masked (default: %(default)s)")
    g.add_argument("--mslam-text-loss", choices=["masked", "all"], default="masked",
                   help="text characters the MLM loss scores: the masked ones (mSLAM, default) or all of them (the "
                        "unmasked ones then name themselves through the CTC-tied layer; mini-scale alignment)")
    g.add_argument("--mslam-ctc-masked", type=str2bool, default=False,
                   help="true: CTC on the masked BEST-RQ pass (no second encoder pass over the paired utterances)")
    add_av_arguments(p)
    add_attention_args(p, default_help="keep the preset's or --init-from checkpoint's setting; presets: full")
    p.add_argument("--world-size", type=int, default=1, help="processes for DDP on this machine (via torchrun)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--verbose", type=str2bool, default=False)
    return p


def _relaunch_with_torchrun(world_size: int) -> None:
    """Re-execute this command under torchrun with ``world_size`` local processes."""
    argv = [a for a in sys.argv[1:]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
           "-m", "icefall_ext.bin.train"] + argv
    os.execv(sys.executable, cmd)


def configure_adapters(model_config: Dict[str, Any], args: argparse.Namespace, languages: List[str]) -> None:
    """Add, keep or drop the ``"adapters"`` entry of a new run's model config (in place) as ``--adapters*`` ask.

    Adapters cover ``languages`` (the LID table); a checkpoint's adapters keep their bottleneck and activation
    (:func:`~icefall_ext.train.init.transfer_weights` maps their rows by language). Raises ValueError when
    adapters are asked of a model that cannot have them or without a language table.
    """
    from ..models.adapters import bottleneck_for_fraction
    from ..models.presets import build_encoder

    existing = dict(model_config.get("adapters") or {})
    if not (existing if args.adapters is None else args.adapters):
        model_config.pop("adapters", None)
        return
    if args.task == "st" or args.pretrain != "none":
        raise ValueError("--adapters true is for ASR models (not --task st or --pretrain)")
    if not languages:
        raise ValueError(f"--adapters true needs {Path(args.lang_dir) / 'languages.txt'} (one adapter per language)")
    adapters = {"languages": list(languages), "bottleneck": existing.get("bottleneck", 0),
                "activation": existing.get("activation", args.adapter_activation)}
    if args.adapter_bottleneck > 0:
        adapters["bottleneck"] = args.adapter_bottleneck
    elif not adapters["bottleneck"]:
        with torch.random.fork_rng(devices=[]):  # counting parameters must not move the model's initial weights
            adapters["bottleneck"] = bottleneck_for_fraction(build_encoder(model_config), args.adapter_fraction)
    model_config["adapters"] = adapters


def freeze_for_training(model: torch.nn.Module, freeze_encoder: bool, train_heads: bool) -> int:
    """Freeze the encoder (``freeze_encoder``) and/or everything outside the encoder and the adapters
    (``train_heads`` false); returns the number of trainable parameters."""
    for name, p in model.named_parameters():
        if freeze_encoder and name.startswith("encoder."):
            p.requires_grad_(False)
        elif not train_heads and not name.startswith(("encoder.", "adapters.")):
            p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _resolve_init_from(path: str) -> Path:
    from ..train.checkpoint import epoch_checkpoints

    p = Path(path)
    if p.is_dir():
        found = epoch_checkpoints(p)
        if not found:
            die(f"--init-from {p}: no epoch-*.pt in that directory")
        return found[-1][1]
    if not p.is_file():
        die(f"--init-from {p}: no such checkpoint")
    return p


def attention_encoder_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The Conformer ``encoder_kwargs`` asked for by ``--attention*`` (empty without ``--attention``).

    Raises ValueError for a chunk shorter than one encoder frame or a negative window.
    """
    if args.attention is None:
        return {}
    if args.attention == "chunk":
        frames = round(args.attention_chunk_seconds / ENCODER_FRAME_SECONDS)
        if frames < 1:
            raise ValueError(f"--attention-chunk-seconds {args.attention_chunk_seconds} is shorter than one "
                             f"encoder frame ({ENCODER_FRAME_SECONDS} s)")
        return {"attention": "chunk", "attention_chunk_frames": frames}
    if args.attention == "local":
        if args.attention_left_frames < 0 or args.attention_right_frames < 0:
            raise ValueError("--attention-left-frames/--attention-right-frames must be >= 0")
        return {"attention": "local", "attention_left": args.attention_left_frames,
                "attention_right": args.attention_right_frames}
    return {"attention": "full"}


def apply_attention(model_config: Dict[str, Any], attention: Dict[str, Any]) -> None:
    """Merge :func:`attention_encoder_kwargs` into a new run's model config (in place).

    Raises ValueError when a restricted attention is asked of a non-Conformer encoder.
    """
    if not attention:
        return
    if model_config["encoder"] != "conformer":
        if attention["attention"] == "full":
            return
        raise ValueError(f"--attention {attention['attention']} needs a conformer encoder (--preset conformer-*); "
                         f"this model's encoder is the {model_config['encoder']}")
    model_config["encoder_kwargs"] = {**model_config["encoder_kwargs"], **attention}


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        attention = attention_encoder_kwargs(args)
    except ValueError as e:
        get_parser().error(str(e))
    if args.world_size > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch_with_torchrun(args.world_size)
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    exp_dir = Path(cfg.exp_dir)
    setup_logging(exp_dir / "log", "log-train", rank, args.verbose)
    if args.threads:
        torch.set_num_threads(args.threads)

    from ..data.dataset import read_languages
    from ..data.filtering import filter_cuts
    from ..data.tokenizer import load_tokenizer
    from ..models.presets import (HEAD_DEFAULTS, asr_config_from, build_model, is_asr_config,
                                  model_config_from_preset, st_config_from_preset)
    from ..train.checkpoint import load_checkpoint
    from ..train.init import transfer_weights
    from ..train.trainer import Trainer, is_shar_dir, limit_hours, load_cuts, mix_in, seed_everything

    seed_everything(cfg.seed)  # before the model is built: initial weights depend on it

    for path in cfg.train_cuts + cfg.valid_cuts + cfg.unlabelled_cuts + cfg.mix_cuts:
        if not (Path(path).is_file() or is_shar_dir(path)):
            die(f"missing cut manifest {path} (run the feature stage first)")
    pretrain = args.pretrain != "none"
    if pretrain and (args.init_from or args.architecture_from):
        die("--pretrain starts from a preset; --init-from / --architecture-from are for fine-tuning")
    if not pretrain and not cfg.lang_dir:
        die("--lang-dir is required (a token table), except with --pretrain")
    tokenizer = None
    if cfg.lang_dir:
        try:
            tokenizer = load_tokenizer(Path(cfg.lang_dir))
        except (FileNotFoundError, ValueError) as e:
            die(str(e))
    source_tokenizer = None
    mslam = args.pretrain == "mslam"
    if (args.task == "st" or mslam) and cfg.source_lang_dir:
        try:
            source_tokenizer = load_tokenizer(Path(cfg.source_lang_dir))
        except (FileNotFoundError, ValueError) as e:
            die(str(e))
    if mslam:
        from ..data.tokenizer import CharTokenizer

        if not isinstance(source_tokenizer, CharTokenizer):
            die("--pretrain mslam needs --source-lang-dir with a character table (tokens.txt, no bpe.model)")
        for path in args.mslam_text:
            if not Path(path).is_file():
                die(f"missing --mslam-text file {path}")
        if cfg.lang_dir:
            logger.warning("--pretrain mslam ignores --lang-dir: its character table is --source-lang-dir's")
        if cfg.unlabelled_cuts or args.task != "asr":
            die("--pretrain mslam takes every --train-cuts cut as speech (no --unlabelled-cuts) and no --task")
    av = args.pretrain == "av"
    if av and (cfg.unlabelled_cuts or args.task != "asr"):
        die("--pretrain av takes the --train-cuts with video (no --unlabelled-cuts) and no --task")
    if args.task == "st" and cfg.mt_scale > 0 and source_tokenizer is None:
        die("--mt-scale > 0 (joint ST + MT) needs --source-lang-dir (the source character table)")
    lang_file = Path(cfg.lang_dir) / "languages.txt"
    languages = read_languages(lang_file) if cfg.lang_dir and lang_file.is_file() else []
    if cfg.lid_scale > 0 and not languages:
        die(f"--lid-scale > 0 needs {lang_file}")
    if args.heads == "lid" and cfg.lid_scale <= 0:
        die("--heads lid trains a language-ID classifier only: give it --lid-scale > 0")

    if world_size > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    model_config_path = exp_dir / "model_config.json"
    init_path = None
    if args.init_from and not any(exp_dir.glob("*.pt")):
        init_path = _resolve_init_from(args.init_from)
    if model_config_path.is_file():
        model_config = json.loads(model_config_path.read_text())
        logger.info("using the model config of the existing experiment %s", model_config_path)
        if mslam and model_config.get("mslam", {}).get("source_tokens") != source_tokenizer.token_table:
            die(f"{cfg.source_lang_dir}/tokens.txt differs from the character table of the experiment's model")
        saved = model_config.get("encoder_kwargs", {})
        if any(saved.get(k, "full" if k == "attention" else None) != v for k, v in attention.items()):
            logger.warning("--attention options differ from the existing experiment's config: ignored (%s)",
                           {k: saved.get(k) for k in attention})
        attention = {}
    elif args.task == "st":
        overrides = json.loads(args.model_overrides)
        try:
            model_config = st_config_from_preset(
                args.preset, tokenizer.vocab_size, source_tokenizer.vocab_size if source_tokenizer else 0,
                source_ctc=source_tokenizer is not None and cfg.ctc_scale > 0, text_input=cfg.mt_scale > 0,
                target_ctc=cfg.target_ctc_scale > 0, **overrides)
        except (KeyError, ValueError) as e:
            die(f"bad model preset/overrides: {e}")
        if init_path is not None:  # the encoder of an ASR / pre-trained model; the decoder starts fresh
            old_config = load_checkpoint(init_path)["model_config"]
            model_config.update({k: old_config[k] for k in ("encoder", "encoder_kwargs", "feature_dim")})
            if old_config.get("pretrain") == "mslam":  # keep its text path: joint MT, zero-shot text translation
                if source_tokenizer is None:
                    die("--init-from an mSLAM checkpoint needs --source-lang-dir (the characters of its text path)")
                model_config["st"]["text_input"] = True
                logger.info("mSLAM checkpoint: the ST model gets a text input (text_frontend) initialised from it")
    elif init_path is not None or args.architecture_from:
        # fine-tuning keeps the architecture of the checkpoint; only the output sizes follow the new tables
        arch_path = init_path or _resolve_init_from(args.architecture_from)
        # an ASR checkpoint keeps its heads; a pre-trained or ST one gives its encoder and gets the --heads asked for
        use_ctc, use_transducer = HEADS[args.heads]
        model_config = asr_config_from(load_checkpoint(arch_path)["model_config"], tokenizer.vocab_size,
                                       len(languages) if cfg.lid_scale > 0 else 0, use_ctc=use_ctc,
                                       use_transducer=use_transducer,
                                       head_defaults=HEAD_DEFAULTS.get(args.preset.partition("-")[2]))
        overrides = json.loads(args.model_overrides)
        model_config["encoder_kwargs"] = {**model_config["encoder_kwargs"], **overrides.pop("encoder_kwargs", {})}
        model_config.update(overrides)
        logger.info("model architecture taken from %s", arch_path)
    else:
        use_ctc, use_transducer = HEADS[args.heads]
        overrides = json.loads(args.model_overrides)
        try:
            model_config = model_config_from_preset(
                args.preset, vocab_size=tokenizer.vocab_size if tokenizer else 0,
                num_languages=len(languages) if cfg.lid_scale > 0 else 0,
                use_ctc=use_ctc, use_transducer=use_transducer, **overrides)
        except (KeyError, ValueError) as e:
            die(f"bad model preset/overrides: {e}")
        if av:
            from ..train.av_pretrain import describe_config, model_config_entry

            try:
                model_config.update(pretrain="av", av=model_config_entry(args, cfg.train_cuts))
            except ValueError as e:
                die(str(e))
            logger.info(describe_config(model_config["av"]))
        elif pretrain:
            model_config.update(pretrain="best_rq", best_rq=dict(
                num_codebooks=args.bestrq_codebooks, num_codes=args.bestrq_num_codes, code_dim=args.bestrq_code_dim,
                mask_prob=args.bestrq_mask_prob, mask_frames=args.bestrq_mask_frames,
                noise_std=args.bestrq_noise_std, norm=args.bestrq_norm, seed=cfg.seed))
        if mslam:
            model_config.update(pretrain="mslam", mslam=dict(
                source_tokens=source_tokenizer.token_table, span=args.mslam_span,
                mask_fraction=args.mslam_mask_fraction, speech_scale=args.mslam_speech_scale,
                text_scale=args.mslam_text_scale, ctc_scale=args.mslam_ctc_scale, use_ctc=args.mslam_ctc_scale > 0,
                ctc_masked=args.mslam_ctc_masked, text_loss=args.mslam_text_loss))
    try:
        apply_attention(model_config, attention)
    except ValueError as e:
        die(str(e))
    if not model_config_path.is_file():
        try:
            configure_adapters(model_config, args, languages)
        except ValueError as e:
            die(str(e))
    elif model_config.get("adapters") and model_config["adapters"]["languages"] != languages:
        die(f"the experiment's adapters cover {model_config['adapters']['languages']} but {lang_file} lists "
            f"{languages}: adapter ids would not match the batches' language ids")
    try:
        model = build_model(model_config)
    except ValueError as e:
        die(f"cannot build the model: {e}")
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %.2fM parameters", model_config.get("encoder"), num_params / 1e6)

    if init_path is not None:
        old = load_checkpoint(init_path)
        # an mSLAM checkpoint's text front end and character layer are indexed by its source table (+ [MASK])
        old_source = (old["model_config"].get("mslam") or {}).get("source_tokens")
        row_tables = None
        if old_source and source_tokenizer is not None:
            row_tables = {name: (old_source, source_tokenizer.token_table) for name in
                          ("text_frontend.embed.weight", "source_ctc.output.weight", "source_ctc.output.bias")}
        old_state = old["model"]
        if args.task == "asr" and not is_asr_config(old["model_config"]):  # ASR from a pre-trained / ST model:
            old_state = {k: v for k, v in old_state.items() if k.startswith("encoder.")}  # its encoder only
        transfer_weights(model, old_state, old.get("tokens", []), tokenizer.token_table,
                         old.get("languages", []), languages, row_tables=row_tables)
        logger.info("initialised from %s", init_path)
    trainable = freeze_for_training(model, args.freeze_encoder, args.train_heads)
    if trainable == 0:
        die("nothing to train: --freeze-encoder true and --train-heads false leave no trainable parameter "
            "(add --adapters true)")
    adapters = getattr(model, "adapters", None)
    if adapters is not None:
        encoder_params = sum(p.numel() for p in model.encoder.parameters())
        logger.info("adapters for %s, bottleneck %d: %d parameters per language (%.2f%% of the encoder's %d)",
                    ", ".join(adapters.languages), adapters.bottleneck, adapters.params_per_language(),
                    100.0 * adapters.params_per_language() / max(1, encoder_params), encoder_params)
    logger.info("training %d of %d parameters (%.2f%%)%s%s", trainable, num_params, 100.0 * trainable / num_params,
                "; encoder frozen" if args.freeze_encoder else "", "; heads frozen" if not args.train_heads else "")

    if rank == 0:
        exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(model_config_path, json.dumps(model_config, indent=2))
        record = dict(dataclasses.asdict(cfg), task=args.task, preset=args.preset, heads=args.heads,
                      init_from=str(init_path) if init_path else None, freeze_encoder=args.freeze_encoder,
                      train_heads=args.train_heads, parameters=num_params, trainable_parameters=trainable,
                      **({"pretrain": args.pretrain, "mslam_text": args.mslam_text} if mslam else {}))
        atomic_write_text(exp_dir / "train_config.json", json.dumps(record, indent=2))

    draws = cfg.mix_ratio > 0 or cfg.train_hours > 0
    lazy = (cfg.lazy or any(is_shar_dir(p) for p in cfg.train_cuts)) and not draws
    if cfg.lazy and draws:
        logger.warning("--mix-ratio / --train-hours draw random subsets: the training cuts are read eagerly")
    try:
        all_train = load_cuts(cfg.train_cuts, lazy=lazy)
        if not lazy:
            all_train = mix_in(limit_hours(all_train, cfg.train_hours, cfg.seed), load_cuts(cfg.mix_cuts),
                               cfg.mix_ratio, cfg.seed)
    except ValueError as e:
        die(str(e))
    if args.task == "st":
        from ..data.dataset import cut_translation

        all_train = all_train.filter(lambda c: bool(cut_translation(c)))  # (the report counts what is left)
    if av:
        from ..train.av_pretrain import has_video

        all_train = all_train.filter(has_video)  # (the report counts what is left)
    train_cuts, report = filter_cuts(all_train, lazy=lazy,
                                     can_encode=None if pretrain or args.task == "st" else tokenizer.can_encode,
                                     require_text=not pretrain, min_duration=cfg.min_duration,
                                     max_duration=cfg.max_cut_duration)
    report.log("train cuts")
    if report.num_kept == 0:
        die("no usable training cuts (see the log for the reasons)")
    valid_cuts = None
    if cfg.valid_cuts:
        valid_cuts = load_cuts(cfg.valid_cuts)
        if av:
            valid_cuts = valid_cuts.filter(has_video)
        valid_cuts, vreport = filter_cuts(valid_cuts, require_text=not pretrain, min_duration=0.0)
        vreport.log("valid cuts")
    unlabelled = None
    if cfg.unlabelled_cuts:
        unlabelled, ureport = filter_cuts(load_cuts(cfg.unlabelled_cuts), require_text=False,
                                          min_duration=cfg.min_duration, max_duration=None)
        ureport.log("unlabelled cuts")

    objective = None
    if args.task == "st":
        from ..train.translation import SpeechTranslationObjective

        objective = SpeechTranslationObjective.from_cuts(train_cuts, source_tokenizer, cfg.mt_scale, cfg.mt_text,
                                                         cfg.seed)
    elif mslam:
        from ..train.mslam import MslamObjective

        try:
            objective = MslamObjective.from_files(args.mslam_text, model.source_tokens, cfg.seed, model.text_scale)
        except ValueError as e:
            die(str(e))
    # mSLAM encodes its text and transcripts itself (unknown characters dropped), AV ignores them: no tokens
    trainer = Trainer(cfg, model, model_config, None if mslam or av else tokenizer, languages, rank=rank,
                      world_size=world_size, device=device, objective=objective)
    trainer.build_sources(train_cuts, valid_cuts, unlabelled)
    trainer.run()
    if world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
