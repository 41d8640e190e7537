"""Encoders (Conformer; Zipformer in ``icefall_ext.models.zipformer``), output heads, and model
assembly from JSON-able configs (``build_model``, ``model_config_from_preset``)."""

from icefall_ext.models.asr_model import AsrModel
from icefall_ext.models.conformer import Conformer
from icefall_ext.models.heads import CtcHead, Decoder, Joiner, LidHead
from icefall_ext.models.presets import build_encoder, build_model, list_presets, model_config_from_preset
from icefall_ext.models.subsampling import Conv2dSubsampling, make_pad_mask

__all__ = [
    "AsrModel",
    "Conformer",
    "Conv2dSubsampling",
    "CtcHead",
    "Decoder",
    "Joiner",
    "LidHead",
    "build_encoder",
    "build_model",
    "list_presets",
    "make_pad_mask",
    "model_config_from_preset",
]
