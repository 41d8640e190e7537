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


def filter_cuts(
    cuts: CutSet,
    *,
    can_encode: Optional[Callable[[str], bool]] = None,
    min_duration: float = 0.3,
    max_duration: Optional[float] = None,
    require_text: bool = True,
    require_features: bool = True,
) -> tuple:
    """Drop cuts that training cannot use; return ``(kept CutSet, FilterReport)``.

    Reasons: no supervision, empty transcript, characters outside the token table, too short, too long,
    no features (their audio was unreadable at the feature stage).
    """
    report = FilterReport()
    kept = []
    for cut in cuts:
        report.num_in += 1
        text = " ".join((s.text or "") for s in cut.supervisions).strip()
        reason = None
        if not cut.supervisions:
            reason = "no supervision"
        elif require_features and not cut.has_features:
            reason = "no features"
        elif require_text and not text:
            reason = "empty transcript"
        elif cut.duration < min_duration:
            reason = f"shorter than {min_duration}s"
        elif max_duration is not None and cut.duration > max_duration:
            reason = f"longer than {max_duration}s"
        elif require_text and can_encode is not None and not can_encode(text):
            reason = "characters outside the token table"
        if reason is None:
            kept.append(cut)
        else:
            report.dropped[reason].append(cut.id)
    report.num_kept = len(kept)
    return CutSet.from_cuts(kept), report
