"""Speech translation: an encoder, an attention decoder over its output, and optional extras.

* ``source_ctc``: an auxiliary CTC head on the source-language transcript (characters), as ESPnet's and fairseq's
  ST recipes use it to help the encoder.
* ``target_ctc``: an auxiliary CTC head on the translation's own tokens (ESPnet's ``st_ctc``; Yan et al. 2023, "CTC
  alignments improve autoregressive translation"): the encoder gets a frame-level training signal from the
  translation alone, without seeing a transcript.
* ``text_frontend``: a second input for joint speech + text training (mSLAM §4.1): source characters ->
  embedding + sinusoidal positions + LayerNorm -> the *same* encoder blocks (``encoder.forward_layers``; the speech
  front end is skipped) -> the same decoder. That turns the model into a text translator too (machine
  translation).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from torch import Tensor, nn

from .attention_decoder import AttentionDecoder, sinusoidal_positions
from .heads import CtcHead, pad_labels


class TextFrontEnd(nn.Module):
    """Character ids (N, U) -> (N, U, D) inputs of the encoder blocks."""

    def __init__(self, vocab_size: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids) * math.sqrt(self.d_model) + sinusoidal_positions(ids.shape[1], self.d_model, ids.device)
        return self.dropout(self.norm(x))


class SpeechTranslationModel(nn.Module):
    """``forward`` gives summed losses: "st" (label-smoothed CE of the translation), "ctc" (source transcript) and
    "target_ctc" (the translation's tokens), each CTC when its head exists; ``mt_loss`` the text-input twin of "st"."""

    def __init__(self, encoder: nn.Module, vocab_size: int, *, source_vocab_size: int = 0, source_ctc: bool = False,
                 text_input: bool = False, target_ctc: bool = False, decoder_layers: int = 6, decoder_dim: int = 256,
                 decoder_heads: int = 4, decoder_ff: int = 1024, decoder_dropout: float = 0.1,
                 label_smoothing: float = 0.1) -> None:
        super().__init__()
        if (source_ctc or text_input) and source_vocab_size <= 0:
            raise ValueError("source CTC and text input need the source character table (source_vocab_size)")
        if text_input and not hasattr(encoder, "forward_layers"):
            raise ValueError(f"{type(encoder).__name__} has no forward_layers: text input needs the Conformer")
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.label_smoothing = label_smoothing
        self.decoder = AttentionDecoder(vocab_size, encoder.output_dim, decoder_dim, decoder_layers, decoder_heads,
                                        decoder_ff, decoder_dropout)
        self.source_ctc = CtcHead(encoder.output_dim, source_vocab_size) if source_ctc else None
        self.target_ctc = CtcHead(encoder.output_dim, vocab_size) if target_ctc else None  # blank: token 0
        self.text_frontend = TextFrontEnd(source_vocab_size, encoder.output_dim) if text_input else None

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        return self.encoder(x, x_lens)

    def encode_text(self, ids: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
        """Source character ids (N, U) and lengths -> encoder output (N, U, D) and lengths."""
        if self.text_frontend is None:
            raise RuntimeError("this model has no text input")
        return self.encoder.forward_layers(self.text_frontend(ids), lens)

    def encode_sources(self, source: List[List[int]]) -> Tuple[Tensor, Tensor]:
        """Ragged source character id lists -> padded -> :meth:`encode_text` (an empty source counts as length 1)."""
        ids, lens = pad_labels(source, padding_value=0, device=next(self.parameters()).device)
        return self.encode_text(ids, lens.clamp(min=1))

    def forward(self, x: Tensor, x_lens: Tensor, targets: List[List[int]],
                source: Optional[List[List[int]]] = None) -> Dict[str, Tensor]:
        enc, enc_lens = self.forward_encoder(x, x_lens)
        out: Dict[str, Tensor] = {}
        out["st"], out["num_tokens"] = self.decoder.loss(enc, enc_lens, targets, self.label_smoothing)
        if self.source_ctc is not None and source is not None:
            out["ctc"] = self.source_ctc.loss(enc, enc_lens, source)
        if self.target_ctc is not None:
            out["target_ctc"] = self.target_ctc.loss(enc, enc_lens, targets)
        return out

    def mt_loss(self, source: List[List[int]], targets: List[List[int]]) -> Tensor:
        """Summed label-smoothed CE of translating source character sequences (text input)."""
        enc, enc_lens = self.encode_sources(source)
        return self.decoder.loss(enc, enc_lens, targets, self.label_smoothing)[0]
