"""Model configs (plain JSON-able dicts), named presets, and ``build_model``.

A config looks like::

    {"encoder": "conformer" | "zipformer", "encoder_kwargs": {...}, "feature_dim": 80,
     "vocab_size": V, "num_languages": L, "use_ctc": bool, "use_transducer": bool,
     "decoder_dim": int, "joiner_dim": int, "context_size": int,
     "adapters": {"languages": [...], "bottleneck": B, "activation": "relu" | "gelu"},   (optional)
     "ctc_head_layers": N,   (optional, default 0)
     "layer_mix": bool}      (optional, default false)

``adapters``: per-language residual adapters on every encoder block (:mod:`icefall_ext.models.adapters`);
``bottleneck`` may be replaced by ``fraction`` (parameters of one language's adapters / encoder parameters),
but saved configs store the resolved ``bottleneck``. ``ctc_head_layers``: Transformer layers inside the CTC head
(a small trainable decoder on a frozen encoder; 0: the linear head of older checkpoints). ``layer_mix``: the heads
read a learnt mix of all the encoder's hidden states (:mod:`icefall_ext.models.layer_mix`).

Presets are named ``<encoder>-<size>`` with sizes ``tiny`` (tests), ``mini`` (CPU, mini corpus)
and ``medium`` (real data, about 65M parameters with transducer heads).
"""

import copy
from typing import Any, Optional

from torch import nn

from icefall_ext.models.asr_model import AsrModel
from icefall_ext.models.conformer import Conformer

ENCODERS = ("conformer", "zipformer")
SIZES = ("tiny", "mini", "medium")

# The mini conformer matches the calibrated ~3.7M-parameter CTC model of DESIGN §4: d=192,
# 6 blocks, 4 heads, kernel 15; its two macaron half-step FFNs of width 384 together hold as
# many weights as one FFN of width 768.
CONFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        d_model=64, num_layers=2, num_heads=2, feedforward_dim=128, cnn_module_kernel=7, subsampling_channels=16
    ),
    "mini": dict(
        d_model=192, num_layers=6, num_heads=4, feedforward_dim=384, cnn_module_kernel=15, subsampling_channels=32
    ),
    "medium": dict(
        d_model=512, num_layers=12, num_heads=8, feedforward_dim=1536, cnn_module_kernel=31, subsampling_channels=128
    ),
}

HEAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(use_ctc=True, use_transducer=False, decoder_dim=64, joiner_dim=64, context_size=2),
    "mini": dict(use_ctc=True, use_transducer=False, decoder_dim=256, joiner_dim=256, context_size=2),
    "medium": dict(use_ctc=True, use_transducer=True, decoder_dim=512, joiner_dim=512, context_size=2),
}

# Speech translation (``"task": "st"``): the attention decoder by size (mSLAM's ST decoder: 6 layers of 512,
# dropout 0.3 for ST alone; 0.1 with joint MT).
ST_DECODERS: dict[str, dict[str, Any]] = {
    "tiny": dict(decoder_layers=2, decoder_dim=64, decoder_heads=2, decoder_ff=128, decoder_dropout=0.1),
    "mini": dict(decoder_layers=3, decoder_dim=192, decoder_heads=4, decoder_ff=768, decoder_dropout=0.1),
    "medium": dict(decoder_layers=6, decoder_dim=512, decoder_heads=8, decoder_ff=2048, decoder_dropout=0.3),
}

# Conformer-only encoder_kwargs of restricted self-attention for long-form audio (see models/conformer.py);
# they pass through encoder_kwargs like any other encoder keyword, so saved configs rebuild the same encoder.
ATTENTION_KEYS = ("attention", "attention_chunk_frames", "attention_left", "attention_right")

_HEAD_KEYS = ("use_ctc", "use_transducer", "decoder_dim", "joiner_dim", "context_size")
_REQUIRED_KEYS = ("encoder", "encoder_kwargs", "feature_dim", "vocab_size", "num_languages") + _HEAD_KEYS
_OPTIONAL_HEAD_KEYS = ("ctc_head_layers", "layer_mix")
_ENCODER_KEYS = ("encoder", "encoder_kwargs", "feature_dim")


def list_presets() -> list[str]:
    """All preset names, ``<encoder>-<size>``."""
    return [f"{encoder}-{size}" for encoder in ENCODERS for size in SIZES]


def _encoder_presets(encoder: str) -> dict[str, dict[str, Any]]:
    if encoder == "conformer":
        return CONFORMER_PRESETS
    from icefall_ext.models.zipformer import PRESETS

    return PRESETS


def model_config_from_preset(
    name: str, vocab_size: int, num_languages: int = 0, feature_dim: int = 80, **overrides: Any
) -> dict[str, Any]:
    """Config dict for preset ``name``.

    ``overrides`` may set any head key (use_ctc, use_transducer, decoder_dim, joiner_dim,
    context_size, ctc_head_layers, layer_mix) or ``encoder_kwargs`` (a dict merged into the preset's encoder kwargs).
    """
    encoder, _, size = name.partition("-")
    if encoder not in ENCODERS or size not in SIZES:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(list_presets())}")
    encoder_kwargs = copy.deepcopy(_encoder_presets(encoder)[size])
    encoder_kwargs.pop("feature_dim", None)  # the top-level "feature_dim" is the one that counts
    config: dict[str, Any] = {
        "encoder": encoder,
        "encoder_kwargs": encoder_kwargs,
        "feature_dim": feature_dim,
        "vocab_size": vocab_size,
        "num_languages": num_languages,
        **HEAD_DEFAULTS[size],
    }
    for key, value in overrides.items():
        if key == "encoder_kwargs":
            config["encoder_kwargs"].update(value)
        elif key in _HEAD_KEYS + _OPTIONAL_HEAD_KEYS:
            config[key] = value
        else:
            raise ValueError(f"unknown override {key!r}; allowed: encoder_kwargs, "
                             f"{', '.join(_HEAD_KEYS + _OPTIONAL_HEAD_KEYS)}")
    return config


def st_config_from_preset(name: str, vocab_size: int, source_vocab_size: int = 0, *, source_ctc: bool = False,
                          text_input: bool = False, target_ctc: bool = False, feature_dim: int = 80,
                          **decoder: Any) -> dict[str, Any]:
    """Config of a speech-translation model: the preset's encoder, its size's decoder (``decoder`` overrides any of
    ``ST_DECODERS``' keys or ``label_smoothing``), the target vocabulary and the source character table's size."""
    config = model_config_from_preset(name, vocab_size, feature_dim=feature_dim)
    for key in _HEAD_KEYS + ("num_languages",):
        config.pop(key)
    size = name.partition("-")[2]
    unknown = set(decoder) - set(ST_DECODERS[size]) - {"label_smoothing"}
    if unknown:
        raise ValueError(f"unknown decoder settings {sorted(unknown)}")
    config.update(task="st", source_vocab_size=source_vocab_size,
                  st=dict(ST_DECODERS[size], source_ctc=source_ctc, text_input=text_input, target_ctc=target_ctc,
                          **decoder))
    return config


def build_encoder(config: dict[str, Any]) -> nn.Module:
    """The encoder described by ``config`` (``encoder``, ``encoder_kwargs``, ``feature_dim``)."""
    if config["encoder"] == "conformer":
        encoder_cls = Conformer
    elif config["encoder"] == "zipformer":
        from icefall_ext.models.zipformer import Zipformer as encoder_cls
    else:
        raise ValueError(f"unknown encoder {config['encoder']!r}; known: {', '.join(ENCODERS)}")
    kwargs = dict(config["encoder_kwargs"])
    attention_keys = sorted(set(kwargs) & set(ATTENTION_KEYS))
    if config["encoder"] != "conformer" and attention_keys:
        raise ValueError(f"encoder_kwargs {', '.join(attention_keys)}: chunk-wise/local attention "
                         f"(attention=chunk|local) is implemented for the conformer only, not the {config['encoder']}")
    if kwargs.setdefault("feature_dim", config["feature_dim"]) != config["feature_dim"]:
        raise ValueError(f"encoder_kwargs feature_dim={kwargs['feature_dim']} != feature_dim={config['feature_dim']}")
    return encoder_cls(**kwargs)


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build an :class:`AsrModel` from a config dict (see module docstring); with ``"task": "st"`` a
    :class:`~icefall_ext.models.st_model.SpeechTranslationModel` (:func:`st_config_from_preset`); with
    ``"pretrain": "best_rq"`` a
    :class:`~icefall_ext.pretrain.best_rq.BestRqModel` of the same encoder (``"best_rq"``: its keyword arguments);
    with ``"pretrain": "mslam"`` a :class:`~icefall_ext.pretrain.mslam.MslamModel` (``"best_rq"`` for its speech
    loss, ``"mslam"``: its keyword arguments, ``source_tokens`` included); with ``"pretrain": "av"`` an
    :class:`~icefall_ext.pretrain.av_mae.AvPretrainModel` (``"av"``: see
    :func:`~icefall_ext.pretrain.av_mae.av_config`).
    Fine-tuning (``train --init-from``) turns any of them into an ASR config with :func:`asr_config_from` (``--task
    st`` takes the encoder, and from mSLAM the text path too)."""
    if config.get("pretrain") == "best_rq":
        from icefall_ext.pretrain.best_rq import BestRq, BestRqModel

        encoder = build_encoder(config)
        return BestRqModel(encoder, BestRq(config["feature_dim"], encoder.output_dim,
                                           stack=encoder.subsampling_factor, **config.get("best_rq", {})))
    if config.get("pretrain") == "mslam":
        from icefall_ext.pretrain.best_rq import BestRq
        from icefall_ext.pretrain.mslam import MslamModel

        encoder = build_encoder(config)
        return MslamModel(encoder, BestRq(config["feature_dim"], encoder.output_dim,
                                          stack=encoder.subsampling_factor, **config.get("best_rq", {})),
                          **config["mslam"])
    if config.get("pretrain") == "av":
        from icefall_ext.pretrain.av_mae import build_av_model

        return build_av_model(build_encoder(config), config["feature_dim"], config["av"])
    if config.get("adapters") and (config.get("task") == "st" or config.get("pretrain") is not None):
        raise ValueError("per-language adapters are implemented for ASR models (AsrModel) only")
    if config.get("task") == "st":
        from icefall_ext.models.st_model import SpeechTranslationModel

        return SpeechTranslationModel(build_encoder(config), config["vocab_size"],
                                      source_vocab_size=config["source_vocab_size"], **config["st"])
    if config.get("pretrain") is not None:
        raise ValueError(f"unknown pretraining objective {config['pretrain']!r} (best_rq, mslam, av)")
    missing = [key for key in _REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"model config lacks {', '.join(missing)}")
    encoder = build_encoder(config)
    return AsrModel(
        encoder,
        config["vocab_size"],
        use_ctc=config["use_ctc"],
        use_transducer=config["use_transducer"],
        num_languages=config["num_languages"],
        decoder_dim=config["decoder_dim"],
        joiner_dim=config["joiner_dim"],
        context_size=config["context_size"],
        adapters=resolve_adapters(config.get("adapters"), encoder),
        ctc_head_layers=config.get("ctc_head_layers", 0),
        layer_mix=config.get("layer_mix", False),
    )


def is_asr_config(config: dict[str, Any]) -> bool:
    """Whether ``config`` describes an :class:`AsrModel` (not a pre-training or speech-translation model)."""
    return config.get("pretrain") is None and config.get("task", "asr") == "asr"


def asr_config_from(config: dict[str, Any], vocab_size: int, num_languages: int, *, use_ctc: bool = True,
                    use_transducer: bool = False, head_defaults: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The ASR config that fine-tuning from a checkpoint of ``config`` builds: its encoder, output sizes of the new
    tables. An ASR config keeps everything else (heads, adapters, CTC head layers); any other (pre-training, speech
    translation) gives a fresh ASR config with the same encoder and the heads asked for (``use_ctc``,
    ``use_transducer``; transducer sizes from ``config`` where it has them, else ``head_defaults``, else the mini
    preset's) and nothing else."""
    if is_asr_config(config):
        return dict(config, vocab_size=vocab_size, num_languages=num_languages)
    sizes = dict(HEAD_DEFAULTS["mini"], **(head_defaults or {}))
    asr = {key: copy.deepcopy(config[key]) for key in _ENCODER_KEYS}
    asr.update(vocab_size=vocab_size, num_languages=num_languages, use_ctc=use_ctc, use_transducer=use_transducer,
               **{k: config.get(k, sizes[k]) for k in ("decoder_dim", "joiner_dim", "context_size")})
    return asr


def resolve_adapters(adapters: Optional[dict[str, Any]], encoder: nn.Module) -> Optional[dict[str, Any]]:
    """The ``"adapters"`` entry of a model config as :class:`AsrModel` keyword arguments (``fraction`` turned
    into a ``bottleneck`` for ``encoder``); None when the config has none."""
    if not adapters:
        return None
    from icefall_ext.models.adapters import bottleneck_for_fraction

    unknown = set(adapters) - {"languages", "bottleneck", "fraction", "activation"}
    if unknown:
        raise ValueError(f"unknown adapter settings {sorted(unknown)} (languages, bottleneck, fraction, activation)")
    kwargs = {k: v for k, v in adapters.items() if k != "fraction"}
    if not kwargs.get("bottleneck"):
        if "fraction" not in adapters:
            raise ValueError("the adapters config needs a bottleneck > 0 or a fraction")
        kwargs["bottleneck"] = bottleneck_for_fraction(encoder, adapters["fraction"])
    return kwargs
