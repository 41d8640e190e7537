"""Start a model from a trained checkpoint whose token set (or language set) may differ.

Every parameter whose shape matches is copied. A parameter indexed by token along its first dimension (CTC
output, joiner output, decoder embedding, simple-loss LM/AM projections) or by language (LID head) is rebuilt:
rows of symbols present in both tables are copied, rows of new symbols keep their fresh initialisation.
Parameters named in ``row_tables`` are indexed by their own symbol tables (e.g. the source characters of a text
front end): their rows are mapped by those tables, and old rows past the old table (an mSLAM [MASK] row) dropped.
Anything else that does not fit is reported and left freshly initialised.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)


def row_map(old: Sequence[str], new: Sequence[str]) -> Tuple[List[int], List[int]]:
    """Indices ``(new_rows, old_rows)`` of the symbols shared by ``old`` and ``new``."""
    where = {s: i for i, s in enumerate(old)}
    pairs = [(j, where[s]) for j, s in enumerate(new) if s in where]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def transfer_weights(
    model: torch.nn.Module,
    old_state: Dict[str, torch.Tensor],
    old_tokens: Sequence[str],
    new_tokens: Sequence[str],
    old_languages: Sequence[str] = (),
    new_languages: Sequence[str] = (),
    row_tables: Optional[Mapping[str, Tuple[Sequence[str], Sequence[str]]]] = None,
) -> Dict[str, str]:
    """Load ``old_state`` into ``model`` as far as it fits; returns ``{param name: what was done}``.

    ``row_tables``: ``{param name: (old symbols, new symbols)}`` for parameters indexed by another table than the
    output tokens or languages."""
    new_state = model.state_dict()
    tok_rows = row_map(old_tokens, new_tokens)
    lang_rows = row_map(old_languages, new_languages)
    done: Dict[str, str] = {}
    tokens_differ = list(old_tokens) != list(new_tokens)
    languages_differ = list(old_languages) != list(new_languages)
    for name, target in new_state.items():
        src = old_state.get(name)
        if src is None:
            done[name] = "new"
            continue
        rows = None
        same_row_shape = target.dim() >= 1 and src.dim() == target.dim() and src.shape[1:] == target.shape[1:]
        if same_row_shape and name in (row_tables or {}):
            old_symbols, new_symbols = row_tables[name]
            same_table = list(old_symbols) == list(new_symbols) and src.shape == target.shape
            if not same_table and src.shape[0] >= len(old_symbols) and target.shape[0] == len(new_symbols):
                rows = row_map(old_symbols, new_symbols)
        elif same_row_shape:
            if tokens_differ and src.shape[0] == len(old_tokens) and target.shape[0] == len(new_tokens):
                rows = tok_rows
            elif languages_differ and src.shape[0] == len(old_languages) and target.shape[0] == len(new_languages):
                rows = lang_rows
        if rows is None:
            if src.shape == target.shape:
                new_state[name] = src.clone()
                done[name] = "copied"
            else:
                done[name] = f"shape {tuple(src.shape)} -> {tuple(target.shape)}: fresh"
            continue
        new_rows, old_rows = rows
        t = target.clone()
        t[new_rows] = src[old_rows].to(t.dtype)
        new_state[name] = t
        done[name] = f"rows: {len(new_rows)} of {target.shape[0]} copied"
    model.load_state_dict(new_state)
    rebuilt = {k: v for k, v in done.items() if v != "copied"}
    shown = ", ".join(f"{k}: {v}" for k, v in list(rebuilt.items())[:10]) + (" ..." if len(rebuilt) > 10 else "")
    logger.info("initialised %d tensors from checkpoint; %d rebuilt or new: %s",
                sum(v == "copied" for v in done.values()), len(rebuilt), shown or "none")
    return done
