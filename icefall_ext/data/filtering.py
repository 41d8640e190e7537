"""Training-data checks: every dropped cut is counted by reason and logged with its id.

Bad input never crashes a stage and never disappears silently: :func:`filter_cuts` returns the kept cuts and a
:class:`FilterReport` that the caller logs (and the trainer writes to its log).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from lhotse import CutSet

logger = logging.getLogger(__name__)


@dataclass
class FilterReport:
    num_in: int = 0
    num_kept: int = 0
    dropped: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))

    def log(self, name: str, max_ids: int = 20) -> None:
        logger.info("%s: kept %d of %d cuts", name, self.num_kept, self.num_in)
        for reason, ids in sorted(self.dropped.items()):
            shown = ", ".join(ids[:max_ids]) + (" ..." if len(ids) > max_ids else "")
            logger.warning("%s: dropped %d cuts (%s): %s", name, len(ids), reason, shown)


def drop_reason(
    cut,
    *,
    can_encode: Optional[Callable[[str], bool]] = None,
    min_duration: float = 0.3,
    max_duration: Optional[float] = None,
    require_text: bool = True,
    require_features: bool = True,
) -> Optional[str]:
    """Why training cannot use ``cut`` (None if it can)."""
    text = " ".join((s.text or "") for s in cut.supervisions).strip()
    if not cut.supervisions:
        return "no supervision"
    if require_features and not cut.has_features:
        return "no features"
    if require_text and not text:
        return "empty transcript"
    if cut.duration < min_duration:
        return f"shorter than {min_duration}s"
    if max_duration is not None and cut.duration > max_duration:
        return f"longer than {max_duration}s"
    if require_text and can_encode is not None and not can_encode(text):
        return "characters outside the token table"
    return None


def filter_cuts(cuts: CutSet, *, lazy: bool = False, **checks) -> tuple:
    """Drop cuts that training cannot use; return ``(kept CutSet, FilterReport)``.

    Reasons (:func:`drop_reason`): no supervision, empty transcript, characters outside the token table, too short,
    too long, no features (their audio was unreadable at the feature stage). With ``lazy`` the report comes from
    one streaming pass over ``cuts`` and the kept cuts are a lazy filter of them: nothing is held in memory, for
    manifests and Shar shards larger than memory.
    """
    report = FilterReport()
    kept = []
    for cut in cuts:
        report.num_in += 1
        reason = drop_reason(cut, **checks)
        if reason is None:
            report.num_kept += 1
            if not lazy:
                kept.append(cut)
        else:
            report.dropped[reason].append(cut.id)
    if lazy:
        return cuts.filter(lambda c: drop_reason(c, **checks) is None), report
    return CutSet.from_cuts(kept), report
