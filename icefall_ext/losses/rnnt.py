"""RNN-T losses with k2's public API (full, simple, smoothed and pruned), in PyTorch.

The lattice
-----------
A sequence pair has ``S`` symbols and ``T`` frames.  Node ``(s, t)`` of the
lattice means "``s`` symbols emitted, currently at frame ``t``".  Following k2,
all log-probabilities of a batch are reduced to two tensors:

* ``px[b, s, t]``: log-prob of emitting symbol ``s`` (i.e. ``symbols[b, s]``)
  from node ``(s, t)``; shape ``(B, S, T+1)`` for the regular topology (the
  extra column ``t = T`` is ``-inf``: nothing can be emitted after the last
  frame), ``(B, S, T)`` for the modified/constrained ones;
* ``py[b, s, t]``: log-prob of the termination (blank) symbol from node
  ``(s, t)``, which moves to the next frame; shape ``(B, S+1, T)``.

``mutual_information_recursion`` computes the total log-likelihood ``p[S, T]``
of all paths from ``(0, 0)``::

    p[0, 0] = 0
    regular:   p[s, t] = logaddexp(p[s-1, t]   + px[s-1, t],   p[s, t-1] + py[s, t-1])
    modified:  p[s, t] = logaddexp(p[s-1, t-1] + px[s-1, t-1], p[s, t-1] + py[s, t-1])

with out-of-range terms ``-inf``.  In the regular topology a path ends with a
blank on the last frame ``T-1``; in the modified one every frame emits exactly
one token (symbol or blank).  The "constrained" topology is the modified one
where emitting a symbol also pays for the blank of the next context on the same
frame (``px += py[:, 1:]``).

Conventions
-----------
* ``boundary``: optional int64 ``(B, 4)`` rows ``[s_begin, t_begin, s_end,
  t_end]`` (default ``[0, 0, S, T]``); the recursion starts at
  ``(s_begin, t_begin)`` and the score is ``p[s_end, t_end]``.  Elements past the
  boundary (padding) get zero gradient.
* All losses are *negative* log-likelihoods, reduced over the batch by
  ``reduction`` in ``{"none", "mean", "sum"}``.
* Low-precision inputs (float16/bfloat16, or autocast) are upcast to float32
  for the log-prob computations and the recursion, so losses are float32.
  ``mutual_information_recursion`` returns its results in the dtype of ``px``.

Formulas
--------
Full loss (``rnnt_loss``): ``logits`` ``(B, T, S+1, C)`` from the joiner,
``log_softmax`` over ``C``; ``px[b, s, t] = logp[b, t, s, symbols[b, s]]``,
``py[b, s, t] = logp[b, t, s, termination_symbol]``.

Simple loss (``rnnt_loss_simple``): the joiner is the sum ``am[b, t] + lm[b, s]``
normalised over the vocabulary; the normaliser ``log sum_c exp(am[t, c] + lm[s, c])``
is one ``(S+1, C) x (C, T)`` matrix product of exponentials (after subtracting
per-row maxima), so the ``(B, T, S+1, C)`` tensor is never built.

Smoothed loss (``rnnt_loss_smoothed``): log-linear interpolation, per arc, of
three log-probs: ``(1 - a - l) * log p_joint + l * log p_lm + a * log p_am``,
with ``p_lm = softmax(lm[s])`` and ``p_am(c | t) ∝ exp(am[t, c]) * u[c]``
where ``u`` is the unigram ``mean_{b, s} softmax(lm[b, s])``.

Pruning: the occupation probabilities ``d p[S,T] / d px`` and ``/ d py`` of
the simple loss (``return_grad=True``) are used by ``get_rnnt_prune_ranges`` to
pick, for each frame, a window of ``s_range`` consecutive symbol positions
(monotone in ``t``, never skipping a symbol, starting at 0 and ending at
``s_end``).  ``do_rnnt_pruning`` gathers the joiner inputs for those positions
and ``rnnt_loss_pruned`` computes the RNN-T loss restricted to that sub-lattice
(arcs outside the windows are ``-inf``), so it is never below the full loss.

Implementation
--------------
The recursion runs one anti-diagonal (``s + t = const``; for the modified
topology one frame) per step, vectorised over batch and symbols, on inputs
re-laid out so that each diagonal is contiguous.  Its backward pass uses the
occupation probabilities ``exp(alpha + arc + beta - total)`` of a
forward-backward computation instead of autograd through the loop.  Joiner
logits are turned into per-node symbol/blank log-probs by one autograd
function whose backward writes a single logits-sized gradient
(``onehot - softmax``), and the log-softmax normaliser is computed in slices,
so the full and pruned losses hold about two logits-sized tensors at their peak.
"""

import logging
import math
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "mutual_information_recursion",
    "get_rnnt_logprobs",
    "get_rnnt_logprobs_joint",
    "get_rnnt_logprobs_smoothed",
    "get_rnnt_logprobs_pruned",
    "rnnt_loss",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
    "rnnt_loss_pruned",
    "get_rnnt_prune_ranges",
    "do_rnnt_pruning",
]

RNNT_TYPES = ("regular", "modified", "constrained")
REDUCTIONS = ("none", "mean", "sum")
NEG_INF = float("-inf")


# ---------------------------------------------------------------------------
# Mutual-information recursion
# ---------------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64, every other floating type is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _to_diagonals(x: Tensor, num_diags: int, num_rows: int, regular: bool) -> Tensor:
    """Re-lay ``x`` (B, R, W) as (num_diags, B, num_rows), -inf where undefined.

    Regular: ``out[d, b, r] = x[b, r, d - r]`` (anti-diagonals ``r + w = d``).
    Modified: ``out[d, b, r] = x[b, r, d]`` (one frame per step).
    """
    B, R, W = x.shape
    out = x.new_full((num_diags, B, num_rows), NEG_INF)
    _diagonal_view(out, R, W, regular).copy_(x)
    return out


def _diagonal_view(diags: Tensor, R: int, W: int, regular: bool) -> Tensor:
    """The (B, R, W) view of a contiguous (D, B, N) diagonal tensor."""
    D, B, N = diags.shape
    if regular:
        # element (b, r, w) lives at ((r + w) * B + b) * N + r
        return diags.as_strided((B, R, W), (N, B * N + 1, B * N))
    return diags.permute(1, 2, 0)[:, :R, :W]


def _corner_groups(
    diags: List[int], rows: List[int], device: torch.device
) -> Dict[int, Tuple[Tensor, Tensor]]:
    """Group batch indices by diagonal: {d: (batch_idx, row_idx)}."""
    grouped: Dict[int, Tuple[List[int], List[int]]] = {}
    for b, (d, r) in enumerate(zip(diags, rows)):
        grouped.setdefault(d, ([], []))
        grouped[d][0].append(b)
        grouped[d][1].append(r)
    return {
        d: (torch.tensor(bs, device=device), torch.tensor(rs, device=device))
        for d, (bs, rs) in grouped.items()
    }


def _per_diagonal_views(scores: Tensor) -> Tuple[Tuple[Tensor, ...], ...]:
    """Per-diagonal views of node scores (D+1, B, S+1): all rows, rows 0..S-1, rows 1..S."""
    return scores.unbind(0), scores[:, :, :-1].unbind(0), scores[:, :, 1:].unbind(0)


def _valid_arc_masks(
    boundary: Tensor, S: int, T: int, T1: int, regular: bool
) -> Tuple[Tensor, Tensor]:
    """Masks of the px (B,S,T1) and py (B,S+1,T) arcs inside each boundary box."""
    s_begin, t_begin, s_end, t_end = (boundary[:, i].view(-1, 1, 1) for i in range(4))
    device = boundary.device
    s_x = torch.arange(S, device=device).view(1, -1, 1)
    t_x = torch.arange(T1, device=device).view(1, 1, -1)
    # a symbol arc from (s, t) lands on (s+1, t) (regular) or (s+1, t+1)
    t_x_last = t_end if regular else t_end - 1
    x_mask = (s_x >= s_begin) & (s_x < s_end) & (t_x >= t_begin) & (t_x <= t_x_last)
    s_y = torch.arange(S + 1, device=device).view(1, -1, 1)
    t_y = torch.arange(T, device=device).view(1, 1, -1)
    y_mask = (s_y >= s_begin) & (s_y <= s_end) & (t_y >= t_begin) & (t_y < t_end)
    return x_mask, y_mask


def _mutual_information(
    px: Tensor, py: Tensor, boundary: Optional[Tensor], with_grads: bool
) -> Tuple[Tensor, Optional[Tuple[Tensor, Tensor]]]:
    """Total log-prob (B,) and, if asked, its gradients wrt px and py.

    Works in the compute dtype; the caller handles dtype conversions.
    """
    B, S, T1 = px.shape
    T = py.shape[2]
    regular = T1 == T + 1
    device = px.device
    N = S + 1  # rows of the diagonal layout
    D = S + T if regular else T  # number of arc diagonals; nodes use D + 1

    if boundary is None:
        begins = [(0, 0)] * B
        ends = [(S, T)] * B
    else:
        rows = boundary.tolist()
        begins = [(r[0], r[1]) for r in rows]
        ends = [(r[2], r[3]) for r in rows]
        x_mask, y_mask = _valid_arc_masks(boundary.to(device), S, T, T1, regular)
        px = px.masked_fill(~x_mask, NEG_INF)
        py = py.masked_fill(~y_mask, NEG_INF)

    def diag_of(s: int, t: int) -> int:
        return s + t if regular else t

    start_diags = [diag_of(s, t) for s, t in begins]
    end_diags = [diag_of(s, t) for s, t in ends]
    d_lo, d_hi = min(start_diags), max(end_diags)

    X = _to_diagonals(px, max(D, 1), N, regular)  # X[d, b, s]: symbol arc from row s
    Y = _to_diagonals(py, max(D, 1), N, regular)  # Y[d, b, s]: blank arc from row s
    batch = torch.arange(B, device=device)
    start_rows = torch.tensor([s for s, _ in begins], device=device)
    end_rows = torch.tensor([s for s, _ in ends], device=device)
    start_diag_t = torch.tensor(start_diags, device=device)
    end_diag_t = torch.tensor(end_diags, device=device)

    y_arcs = Y.unbind(0)
    x_arcs = X[:, :, :S].unbind(0)  # row S has no symbol arc
    emitted = px.new_empty(B, S)

    # forward scores alpha[d, b, s] = p[b, s, t(d, s)]
    alpha = px.new_full((D + 1, B, N), NEG_INF)
    alpha[start_diag_t, batch, start_rows] = 0.0
    late_starts = _corner_groups(start_diags, [s for s, _ in begins], device)
    nodes, low_rows, high_rows = _per_diagonal_views(alpha)
    for d in range(d_lo + 1, d_hi + 1):
        torch.add(nodes[d - 1], y_arcs[d - 1], out=nodes[d])
        torch.add(low_rows[d - 1], x_arcs[d - 1], out=emitted)
        torch.logaddexp(high_rows[d], emitted, out=high_rows[d])
        if d in late_starts:
            b_idx, s_idx = late_starts[d]
            nodes[d][b_idx, s_idx] = 0.0
    total = alpha[end_diag_t, batch, end_rows]
    if not with_grads:
        return total, None
    if D == 0:  # a lattice without arcs
        return total, (torch.zeros_like(px), torch.zeros_like(py))

    # backward scores beta[d, b, s] = log-prob of all paths from the node to the end
    beta = px.new_full((D + 1, B, N), NEG_INF)
    beta[end_diag_t, batch, end_rows] = 0.0
    early_ends = _corner_groups(end_diags, [s for s, _ in ends], device)
    nodes, low_rows, high_rows = _per_diagonal_views(beta)
    for d in range(d_hi - 1, d_lo - 1, -1):
        torch.add(nodes[d + 1], y_arcs[d], out=nodes[d])
        torch.add(high_rows[d + 1], x_arcs[d], out=emitted)
        torch.logaddexp(low_rows[d], emitted, out=low_rows[d])
        if d in early_ends:
            b_idx, s_idx = early_ends[d]
            nodes[d][b_idx, s_idx] = 0.0

    # occupation probability of an arc: exp(alpha(src) + arc + beta(dst) - total)
    norm = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    norm = norm.view(1, B, 1)
    beta_after_symbol = torch.cat(
        (beta[1:, :, 1:], beta.new_full((D, B, 1), NEG_INF)), dim=2
    )
    x_grad_diag = (alpha[:D] + X[:D] + beta_after_symbol - norm).exp()
    y_grad_diag = (alpha[:D] + Y[:D] + beta[1:] - norm).exp()
    px_grad = _diagonal_view(x_grad_diag, S, T1, regular).contiguous()
    py_grad = _diagonal_view(y_grad_diag, N, T, regular).contiguous()
    return total, (px_grad, py_grad)


class _MutualInformationFunction(torch.autograd.Function):
    """Autograd wrapper: gradients are the occupation probabilities found in forward."""

    @staticmethod
    def forward(ctx, px: Tensor, py: Tensor, boundary: Optional[Tensor]):
        dtype = _compute_dtype(px.dtype)
        with torch.autocast(device_type=px.device.type, enabled=False):
            total, (px_grad, py_grad) = _mutual_information(
                px.detach().to(dtype), py.detach().to(dtype), boundary, with_grads=True
            )
        ctx.save_for_backward(px_grad, py_grad)
        ctx.input_dtype = px.dtype
        px_grad_out, py_grad_out = px_grad.to(px.dtype), py_grad.to(px.dtype)
        ctx.mark_non_differentiable(px_grad_out, py_grad_out)
        return total.to(px.dtype), px_grad_out, py_grad_out

    @staticmethod
    def backward(ctx, total_grad: Tensor, *unused_grads):
        px_grad, py_grad = ctx.saved_tensors
        scale = total_grad.to(px_grad.dtype).view(-1, 1, 1)
        return (
            (px_grad * scale).to(ctx.input_dtype),
            (py_grad * scale).to(ctx.input_dtype),
            None,
        )


def _check_boundary(boundary: Optional[Tensor], B: int, S: int, T: int) -> None:
    if boundary is None:
        return
    if boundary.dtype != torch.int64 or boundary.shape != (B, 4):
        raise ValueError(f"boundary must be int64 of shape ({B}, 4), got "
                         f"{boundary.dtype} {tuple(boundary.shape)}")
    for s_begin, t_begin, s_end, t_end in boundary.tolist():
        if not (0 <= s_begin <= s_end <= S and 0 <= t_begin <= t_end <= T):
            raise ValueError(
                f"boundary row {[s_begin, t_begin, s_end, t_end]} outside S={S}, T={T}"
            )


def mutual_information_recursion(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor] = None,
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """Log-sum over monotone paths of a (S+1, T+1) lattice (see module docstring).

    Args:
      px: (B, S, T+1) (regular) or (B, S, T) (modified) log-probs of x-arcs.
      py: (B, S+1, T) log-probs of y-arcs, same dtype as ``px``.
      boundary: optional int64 (B, 4) ``[s_begin, t_begin, s_end, t_end]``.
      return_grad: also return ``(px_grad, py_grad)``, the gradients of
        ``scores.sum()`` wrt px and py, i.e. arc occupation probabilities.

    Returns:
      ``scores`` (B,), or ``(scores, (px_grad, py_grad))`` if ``return_grad``.
    """
    if px.ndim != 3 or py.ndim != 3:
        raise ValueError(f"px and py must be 3-D, got {tuple(px.shape)}, {tuple(py.shape)}")
    B, S, T1 = px.shape
    T = py.shape[2]
    if T1 not in (T, T + 1) or py.shape != (B, S + 1, T):
        raise ValueError(f"inconsistent shapes px={tuple(px.shape)} py={tuple(py.shape)}")
    if px.dtype != py.dtype:
        raise ValueError(f"px and py dtypes differ: {px.dtype} vs {py.dtype}")
    _check_boundary(boundary, B, S, T)

    needs_graph = torch.is_grad_enabled() and (px.requires_grad or py.requires_grad)
    if not (return_grad or needs_graph):
        with torch.autocast(device_type=px.device.type, enabled=False):
            dtype = _compute_dtype(px.dtype)
            total, _ = _mutual_information(px.to(dtype), py.to(dtype), boundary, False)
        return total.to(px.dtype)
    total, px_grad, py_grad = _MutualInformationFunction.apply(px, py, boundary)
    return (total, (px_grad, py_grad)) if return_grad else total


# ---------------------------------------------------------------------------
# Reduction of RNN-T problems to (px, py)
# ---------------------------------------------------------------------------


def _check_rnnt_type(rnnt_type: str) -> None:
    if rnnt_type not in RNNT_TYPES:
        raise ValueError(f"rnnt_type must be one of {RNNT_TYPES}, got {rnnt_type!r}")


def _check_reduction(reduction: Optional[str]) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_lengths(S: int, T: int, rnnt_type: str, boundary: Optional[Tensor]) -> None:
    """The modified/constrained topologies emit at most one symbol per frame."""
    if rnnt_type == "regular":
        return
    lengths = [(S, T)] if boundary is None else [(r[2], r[3]) for r in boundary.tolist()]
    for s, t in lengths:
        if t < s:
            raise ValueError(f"{rnnt_type} transducer needs T >= S, got T={t}, S={s}")


def _upcast(x: Tensor) -> Tensor:
    return x.to(_compute_dtype(x.dtype)) if x.is_floating_point() else x


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def _finish_logprobs(
    px: Tensor, py: Tensor, rnnt_type: str, boundary: Optional[Tensor]
) -> Tuple[Tensor, Tensor]:
    """Turn (px (B,S,T), py (B,S+1,T)) into the layout of ``rnnt_type``."""
    if rnnt_type == "constrained":
        return px + py[:, 1:, :], py
    if rnnt_type == "modified":
        return px, py
    B, S, T = px.shape
    px = torch.cat((px, px.new_full((B, S, 1), NEG_INF)), dim=2)
    if boundary is not None:
        # no symbol can be emitted on (or after) the one-past-the-last frame
        t = torch.arange(T + 1, device=px.device).view(1, 1, -1)
        t_end = boundary[:, 3].to(px.device).view(-1, 1, 1)
        px = px.masked_fill(t == t_end, NEG_INF)
    return px, py


def _simple_arc_terms(
    lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Unnormalised am/lm parts of the arcs: px_am (B,S,T), px_lm (B,S,1),
    py_am (B,1,T), py_lm (B,S+1,1)."""
    B, T, C = am.shape
    S = lm.shape[1] - 1
    px_am = am.gather(2, symbols.unsqueeze(1).expand(B, T, S)).transpose(1, 2)
    px_lm = lm[:, :S].gather(2, symbols.unsqueeze(2))
    py_am = am[:, :, termination_symbol].unsqueeze(1)
    py_lm = lm[:, :, termination_symbol].unsqueeze(2)
    return px_am, px_lm, py_am, py_lm


def _check_simple_inputs(lm: Tensor, am: Tensor, symbols: Tensor) -> Tuple[int, int, int, int]:
    if lm.ndim != 3 or am.ndim != 3 or lm.shape[0] != am.shape[0] or lm.shape[2] != am.shape[2]:
        raise ValueError(f"expected lm (B,S+1,C) and am (B,T,C), got "
                         f"{tuple(lm.shape)}, {tuple(am.shape)}")
    B, T, C = am.shape
    S = lm.shape[1] - 1
    if symbols.shape != (B, S):
        raise ValueError(f"symbols must have shape ({B}, {S}), got {tuple(symbols.shape)}")
    return B, S, T, C


def _joint_log_normalizers(lm: Tensor, am: Tensor) -> Tensor:
    """log sum_c exp(lm[b, s, c] + am[b, t, c]) as (B, S+1, T), without (B,S+1,T,C).

    One matrix product of ``exp(lm - max)`` and ``exp(am - max)``.  Entries whose
    sum is so small that its terms may have underflowed (the two maxima are on
    different, incompatible tokens) are recomputed exactly by a logsumexp.
    """
    lm_max = lm.detach().amax(dim=2, keepdim=True)  # (B, S+1, 1)
    am_max = am.detach().amax(dim=2, keepdim=True)  # (B, T, 1)
    products = torch.matmul((lm - lm_max).exp(), (am - am_max).exp().transpose(1, 2))
    tiny = torch.finfo(products.dtype).tiny
    normalizers = products.clamp_min(tiny).log() + lm_max + am_max.transpose(1, 2)
    # a dropped term is below `tiny`; relative to a sum above tiny**0.7 it is negligible
    b, s, t = torch.nonzero(products.detach() < tiny**0.7, as_tuple=True)
    if b.numel() == 0:
        return normalizers
    exact = (lm[b, s] + am[b, t]).logsumexp(dim=1)
    return normalizers.index_put((b, s, t), exact)


def get_rnnt_logprobs(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    rnnt_type: str = "regular",
    boundary: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(px, py) of the simple joiner ``log_softmax(am[b, t] + lm[b, s])``.

    Args:
      lm: (B, S+1, C) unnormalised "language model" scores.
      am: (B, T, C) unnormalised "acoustic model" scores.
      symbols: (B, S) int64 symbol ids.
      termination_symbol: blank id.
      rnnt_type: "regular", "modified" or "constrained".
      boundary: optional (B, 4) ``[s_begin, t_begin, s_end, t_end]``.
    Returns:
      px (B, S, T+1) for regular else (B, S, T); py (B, S+1, T).
    """
    _check_rnnt_type(rnnt_type)
    B, S, T, C = _check_simple_inputs(lm, am, symbols)
    _check_lengths(S, T, rnnt_type, boundary)
    with _no_autocast(am.device):
        lm, am = _upcast(lm), _upcast(am)
        normalizers = _joint_log_normalizers(lm, am)
        px_am, px_lm, py_am, py_lm = _simple_arc_terms(lm, am, symbols, termination_symbol)
        px = px_am + px_lm - normalizers[:, :S]
        py = py_am + py_lm - normalizers
        return _finish_logprobs(px, py, rnnt_type, boundary)


def get_rnnt_logprobs_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """(px, py) of the smoothed simple joiner (see module docstring)::

        (1 - l - a) * log p_joint + l * log p_lm(s) + a * log p_am(t)

    ``p_am`` uses the batch unigram ``mean_{b,s} softmax(lm[b, s])`` as prior.
    Shapes as in :func:`get_rnnt_logprobs`.
    """
    _check_rnnt_type(rnnt_type)
    B, S, T, C = _check_simple_inputs(lm, am, symbols)
    _check_lengths(S, T, rnnt_type, boundary)
    with _no_autocast(am.device):
        lm, am = _upcast(lm), _upcast(am)
        normalizers = _joint_log_normalizers(lm, am)  # (B, S+1, T)
        lm_logprobs = lm.log_softmax(dim=2)  # (B, S+1, C)
        # log of the unigram mean_{b,s} softmax(lm[b, s]), in the log domain
        log_unigram = lm_logprobs.logsumexp(dim=(0, 1)) - math.log(B * (S + 1))  # (C,)
        am_only_norm = (am + log_unigram).logsumexp(dim=2).unsqueeze(1)  # (B, 1, T)

        px_am, px_lm, py_am, py_lm = _simple_arc_terms(lm, am, symbols, termination_symbol)
        px_joint = px_am + px_lm - normalizers[:, :S]
        py_joint = py_am + py_lm - normalizers
        px_lm_only = lm_logprobs[:, :S].gather(2, symbols.unsqueeze(2))  # (B, S, 1)
        py_lm_only = lm_logprobs[:, :, termination_symbol].unsqueeze(2)  # (B, S+1, 1)
        px_am_only = px_am + log_unigram[symbols].unsqueeze(2) - am_only_norm
        py_am_only = py_am + log_unigram[termination_symbol] - am_only_norm

        joint_scale = 1.0 - lm_only_scale - am_only_scale
        px = joint_scale * px_joint
        py = joint_scale * py_joint
        if lm_only_scale != 0.0:
            px = px + lm_only_scale * px_lm_only
            py = py + lm_only_scale * py_lm_only
        if am_only_scale != 0.0:
            px = px + am_only_scale * px_am_only
            py = py + am_only_scale * py_am_only
        return _finish_logprobs(px, py, rnnt_type, boundary)


def _logsumexp_last_dim(x: Tensor, chunk_elements: int = 1 << 22) -> Tensor:
    """``x.logsumexp(-1)`` in slices of rows, so that its logits-sized temporary
    (``x - max``) stays at ``chunk_elements``."""
    if not x.is_contiguous() or x.numel() <= chunk_elements:
        return x.logsumexp(dim=-1)
    rows = x.view(-1, x.shape[-1])
    step = max(1, chunk_elements // x.shape[-1])
    out = torch.cat([chunk.logsumexp(dim=-1) for chunk in rows.split(step)])
    return out.view(x.shape[:-1])


class _NodeLogProbs(torch.autograd.Function):
    """Symbol and blank log-probs of every lattice node from its logits.

    ``logits`` (..., C), ``symbol_ids`` (...) -> ``(log_softmax(logits)[..., symbol_ids],
    log_softmax(logits)[..., blank])``.  Same as log_softmax + two gathers under
    autograd, but the backward writes one logits-sized tensor instead of four.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, symbol_ids: Tensor, blank: int):
        normalizers = _logsumexp_last_dim(logits)
        symbol_logprobs = logits.gather(-1, symbol_ids.unsqueeze(-1)).squeeze(-1) - normalizers
        blank_logprobs = logits[..., blank] - normalizers
        ctx.save_for_backward(logits, normalizers, symbol_ids)
        ctx.blank = blank
        return symbol_logprobs, blank_logprobs

    @staticmethod
    def backward(ctx, symbol_grad: Tensor, blank_grad: Tensor):
        logits, normalizers, symbol_ids = ctx.saved_tensors
        # d/dlogits log_softmax(logits)[k] = onehot(k) - softmax(logits)
        grad = (logits - normalizers.unsqueeze(-1)).exp_()
        grad.mul_(-(symbol_grad + blank_grad).unsqueeze(-1))
        grad.scatter_add_(-1, symbol_ids.unsqueeze(-1), symbol_grad.unsqueeze(-1))
        grad[..., ctx.blank] += blank_grad
        return grad, None, None


def get_rnnt_logprobs_joint(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    rnnt_type: str = "regular",
    boundary: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(px, py) from full joiner logits (B, T, S+1, C), log-softmax over C."""
    _check_rnnt_type(rnnt_type)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, S+1, C), got {tuple(logits.shape)}")
    B, T, S1, C = logits.shape
    S = S1 - 1
    if symbols.shape != (B, S):
        raise ValueError(f"symbols must have shape ({B}, {S}), got {tuple(symbols.shape)}")
    _check_lengths(S, T, rnnt_type, boundary)
    with _no_autocast(logits.device):
        # the symbol of row s is symbols[s]; row S emits none (any id, discarded)
        row_symbols = torch.cat((symbols, symbols.new_full((B, 1), termination_symbol)), dim=1)
        px, py = _NodeLogProbs.apply(
            _upcast(logits), row_symbols.unsqueeze(1).expand(B, T, S1), termination_symbol
        )  # (B, T, S+1) each
        return _finish_logprobs(
            px[:, :, :S].transpose(1, 2), py.transpose(1, 2), rnnt_type, boundary
        )


def get_rnnt_logprobs_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor],
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """(px, py) from pruned joiner logits (B, T, s_range, C).

    ``logits[b, t, k]`` belongs to node ``(ranges[b, t, k], t)``; arcs from nodes
    outside the ranges are ``-inf``.  Shapes as in :func:`get_rnnt_logprobs`.
    """
    _check_rnnt_type(rnnt_type)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, s_range, C), got {tuple(logits.shape)}")
    B, T, s_range, C = logits.shape
    if ranges.shape != (B, T, s_range):
        raise ValueError(f"ranges must be ({B}, {T}, {s_range}), got {tuple(ranges.shape)}")
    S = symbols.shape[1]
    _check_lengths(S, T, rnnt_type, boundary)
    with _no_autocast(logits.device):
        row_symbols = torch.cat((symbols, symbols.new_full((B, 1), termination_symbol)), dim=1)
        kept_symbols = row_symbols.gather(1, ranges.reshape(B, T * s_range)).view(B, T, s_range)
        px_kept, py_kept = _NodeLogProbs.apply(_upcast(logits), kept_symbols, termination_symbol)
        # back to the full lattice: -inf on the nodes that were pruned away
        lattice = px_kept.new_full((B, T, S + 1), NEG_INF)
        px = lattice.scatter(2, ranges, px_kept)[:, :, :S]
        py = lattice.scatter(2, ranges, py_kept)
        return _finish_logprobs(px.transpose(1, 2), py.transpose(1, 2), rnnt_type, boundary)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def _add_delay_penalty(
    px: Tensor, delay_penalty: float, boundary: Optional[Tensor], rnnt_type: str
) -> Tensor:
    """Reward early emissions: px[b, :, t] += delay_penalty * ((T_b - 1) / 2 - t)."""
    if delay_penalty <= 0.0:
        return px
    B, S, T1 = px.shape
    T = T1 - 1 if rnnt_type == "regular" else T1
    if boundary is None:
        frames = torch.full((B,), float(T), device=px.device, dtype=px.dtype)
    else:
        frames = boundary[:, 3].to(device=px.device, dtype=px.dtype)
    offset = (frames - 1) / 2
    t = torch.arange(T1, device=px.device, dtype=px.dtype)
    penalty = delay_penalty * (offset.view(B, 1, 1) - t.view(1, 1, T1))
    return px + penalty


def _reduce(neg_loglike: Tensor, reduction: Optional[str]) -> Tensor:
    if reduction == "none":
        return neg_loglike
    if reduction == "mean":
        return neg_loglike.mean()
    return neg_loglike.sum()


def _loss_from_logprobs(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor],
    rnnt_type: str,
    delay_penalty: float,
    reduction: Optional[str],
    return_grad: bool,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    px = _add_delay_penalty(px, delay_penalty, boundary, rnnt_type)
    result = mutual_information_recursion(px, py, boundary=boundary, return_grad=return_grad)
    if return_grad:
        scores, grads = result
        return _reduce(-scores, reduction), grads
    return _reduce(-result, reduction)


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
) -> Tensor:
    """Full RNN-T loss from joiner logits (B, T, S+1, C).

    Args:
      logits: joiner output, log-softmax is taken over the last axis.
      symbols: (B, S) int64.
      termination_symbol: blank id.
      boundary: optional (B, 4) ``[s_begin, t_begin, s_end, t_end]``.
      rnnt_type: "regular", "modified" or "constrained".
      delay_penalty: if > 0, rewards emitting symbols early (k2 semantics).
      reduction: "none" (B,), "mean" or "sum".
    Returns:
      Negative log-likelihood.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_joint(logits, symbols, termination_symbol, rnnt_type, boundary)
    return _loss_from_logprobs(px, py, boundary, rnnt_type, delay_penalty, reduction, False)


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """RNN-T loss of the additive joiner ``log_softmax(am[b, t] + lm[b, s])``.

    ``lm`` is (B, S+1, C), ``am`` is (B, T, C).  With ``return_grad`` also
    returns ``(px_grad, py_grad)`` (occupation probabilities, as from
    :func:`mutual_information_recursion`) for :func:`get_rnnt_prune_ranges`.
    Other arguments as in :func:`rnnt_loss`.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, rnnt_type, boundary)
    return _loss_from_logprobs(
        px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad
    )


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """Simple RNN-T loss with LM-only and AM-only smoothing terms.

    See :func:`get_rnnt_logprobs_smoothed` for the interpolation and
    :func:`rnnt_loss_simple` for the other arguments.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_smoothed(
        lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale, boundary, rnnt_type
    )
    return _loss_from_logprobs(
        px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad
    )


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
) -> Tensor:
    """RNN-T loss on the pruned lattice, from logits (B, T, s_range, C).

    ``ranges`` (B, T, s_range) comes from :func:`get_rnnt_prune_ranges`; other
    arguments as in :func:`rnnt_loss`.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_pruned(
        logits, symbols, ranges, termination_symbol, boundary, rnnt_type
    )
    return _loss_from_logprobs(px, py, boundary, rnnt_type, delay_penalty, reduction, False)


# ---------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------


def _suffix_min(x: Tensor) -> Tensor:
    """out[..., i] = min(x[..., i:]): the largest non-decreasing lower bound of x."""
    return x.flip(-1).cummin(dim=-1).values.flip(-1)


def _constrain_window_starts(s_begin: Tensor, max_step: int) -> Tensor:
    """Make per-frame window starts (B, T) usable for pruning.

    Result is non-decreasing, starts at 0 on frame 0, and grows by at most
    ``max_step`` per frame (so no symbol is skipped).  Values can only be
    lowered by the first step, raised by the second and lowered by the third,
    staying within [0, max(s_begin)].
    """
    s_begin = _suffix_min(s_begin)
    reach = max_step * torch.arange(s_begin.shape[1], device=s_begin.device)
    # s[i] - s[i+1] >= -max_step  <=>  (reach - s) is non-decreasing
    slack = _suffix_min(reach - s_begin)
    # s[i] <= max_step * i (hence s[0] = 0)  <=>  slack >= 0
    return reach - slack.clamp_min(0)


def get_rnnt_prune_ranges(
    px_grad: Tensor,
    py_grad: Tensor,
    boundary: Tensor,
    s_range: int,
) -> Tensor:
    """Per-frame windows of ``s_range`` symbol positions to keep (k2 semantics).

    Args:
      px_grad: (B, S, T+1) (regular) or (B, S, T) occupation probabilities of
        symbol arcs, e.g. from ``rnnt_loss_simple(..., return_grad=True)``.
      py_grad: (B, S+1, T) occupation probabilities of blank arcs.
      boundary: (B, 4) ``[s_begin, t_begin, s_end, t_end]``.
      s_range: window width; raised to the minimum that lets every sequence
        reach its last symbol, and lowered to S+1 when larger.
    Returns:
      int64 (B, T, s_range) with ``ranges[b, t] = start[b, t] + arange(s_range)``,
      ``start`` non-decreasing in t with steps < s_range, within [0, S].
    """
    B, S, T1 = px_grad.shape
    T = py_grad.shape[2]
    regular = T1 == T + 1
    if T1 not in (T, T + 1) or py_grad.shape != (B, S + 1, T) or boundary.shape != (B, 4):
        raise ValueError(f"inconsistent shapes px_grad={tuple(px_grad.shape)} "
                         f"py_grad={tuple(py_grad.shape)} boundary={tuple(boundary.shape)}")
    min_range = 2 if regular else 1
    if s_range < min_range:
        raise ValueError(f"s_range must be >= {min_range} for this topology, got {s_range}")
    if not regular:
        _check_lengths(S, T, "modified", boundary)
    lengths = boundary[:, 2:].tolist()
    if regular:
        # a window may advance by s_range - 1 symbols per frame: need (r - 1) * T_b >= S_b
        needed = max(-(-s // max(t, 1)) + 1 for s, t in lengths)
        if s_range < needed:
            logger.warning("s_range=%d too small for S/T=%s; using %d", s_range, lengths, needed)
            s_range = needed
    s_range = min(s_range, S + 1)

    # Score of the window [s, s + r) on frame t: probability that the path
    # leaves frame t from a row in the window, minus the probability that it
    # enters the window from below on that frame.
    leave = py_grad.unfold(1, s_range, 1).sum(dim=3)  # (B, S+2-r, T)
    enter_from_below = torch.cat(
        (px_grad.new_zeros(B, 1, T), px_grad[:, : S + 1 - s_range, :T]), dim=1
    )
    s_begin = (leave - enter_from_below).argmax(dim=1)  # (B, T)

    # from the last frame of each sequence on, the window must hold s_end
    device = px_grad.device
    bounds = boundary.to(device)
    last_start = (bounds[:, 2:3] - s_range + 1).clamp_min(0)
    t = torch.arange(T, device=device).view(1, T)
    s_begin = torch.where(t < bounds[:, 3:4] - 1, s_begin, last_start)
    s_begin = _constrain_window_starts(s_begin, s_range - 1 if regular else 1)
    return s_begin.unsqueeze(2) + torch.arange(s_range, device=device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> Tuple[Tensor, Tensor]:
    """Joiner inputs for the kept nodes.

    Args:
      am: (B, T, D_am) encoder-side joiner input.
      lm: (B, S+1, D_lm) decoder-side joiner input.
      ranges: (B, T, s_range) from :func:`get_rnnt_prune_ranges`.
    Returns:
      ``am_pruned`` (B, T, s_range, D_am) (an expanded view) and
      ``lm_pruned`` (B, T, s_range, D_lm) with ``lm_pruned[b, t, k] = lm[b, ranges[b, t, k]]``.
    """
    B, T, s_range = ranges.shape
    if am.shape[:2] != (B, T) or lm.shape[0] != B:
        raise ValueError(f"shapes do not match: am={tuple(am.shape)} lm={tuple(lm.shape)} "
                         f"ranges={tuple(ranges.shape)}")
    am_pruned = am.unsqueeze(2).expand(B, T, s_range, am.shape[2])
    S1, dim = lm.shape[1], lm.shape[2]
    # whole-row copies (index_select) are faster than an element-wise gather
    rows = ranges + S1 * torch.arange(B, device=ranges.device).view(B, 1, 1)
    lm_pruned = lm.reshape(B * S1, dim).index_select(0, rows.reshape(-1))
    return am_pruned, lm_pruned.view(B, T, s_range, dim)
