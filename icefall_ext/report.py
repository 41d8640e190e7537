"""Helpers the recipes' RESULTS.md writers share: JSON loading, number cells, line plots, the stage-time table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

Curve = List[Tuple[float, float]]


def load_json(path: Path) -> Optional[Dict]:
    """The JSON object in ``path``, or None when the file does not exist (a stage that has not run)."""
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def mean(xs: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the values that are not None (None when there are none)."""
    values = [x for x in xs if x is not None]
    return sum(values) / len(values) if values else None


def validation_records(path: Path) -> List[Dict]:
    """The records of a run's ``valid.jsonl``, in order (none when the run has not validated)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def validation_curve(path: Path, key: str, offset: int = 0) -> Curve:
    """(update + offset, value of ``key``) of each validation in a run's ``valid.jsonl`` that has ``key``
    (a dotted key such as ``per_language.el`` reads a nested value)."""
    points = []
    for record in validation_records(path):
        value = record
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            points.append((record["update"] + offset, float(value)))
    return points


def draw_curves(curves: Dict[str, Curve], out: Path, ylabel: str, xlabel: str) -> bool:
    """Line plot of named (x, y) curves into ``out``; False when there is nothing to draw."""
    curves = {label: points for label, points in curves.items() if points}
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in curves.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def stage_time_section(path: Path) -> List[str]:
    """Markdown table of ``utils/stage.sh``'s stage-time file (stage, seconds, description), with the total."""
    if not path.is_file():
        return []
    rows = [line.split("\t", 2) for line in path.read_text().splitlines() if line.strip()]
    total = sum(int(seconds) for _, seconds, _ in rows)

    def clock(seconds: int) -> str:
        return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"

    return ["## Wall time of each stage", "",
            "Recorded by the recipe itself (utils/stage.sh): the latest run of each stage.", "",
            "| stage | what | wall time (min:s) |", "|---|---|---|",
            *[f"| {n} | {desc} | {clock(seconds)} |" for n, seconds, desc in rows],
            f"| | total | {clock(total)} |", ""]
