"""Print parameter counts (total, encoder, heads) of model presets.

Example: python -m icefall_ext.bin.model_info --preset conformer-mini --vocab-size 500
"""

import argparse
from typing import Optional

from torch import nn

from icefall_ext.models.presets import build_model, list_presets, model_config_from_preset


def count_parameters(module: Optional[nn.Module]) -> int:
    """Number of scalar parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def preset_row(name: str, vocab_size: int, num_languages: int, feature_dim: int) -> dict[str, str]:
    """Table row (strings) for one preset with its default heads."""
    config = model_config_from_preset(name, vocab_size, num_languages=num_languages, feature_dim=feature_dim)
    model = build_model(config)
    total = count_parameters(model)
    encoder = count_parameters(model.encoder)
    heads = [h for h, on in (("ctc", config["use_ctc"]), ("transducer", config["use_transducer"])) if on]
    if num_languages > 0:
        heads.append("lid")
    return {
        "preset": name,
        "heads": "+".join(heads),
        "total": f"{total / 1e6:.2f}M",
        "encoder": f"{encoder / 1e6:.2f}M",
        "heads_params": f"{(total - encoder) / 1e6:.2f}M",
    }


def format_table(rows: list[dict[str, str]]) -> str:
    """Markdown table of ``preset_row`` results."""
    columns = [("preset", "preset"), ("heads", "heads"), ("total", "total"), ("encoder", "encoder"),
               ("heads_params", "heads params")]
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[key] for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Parameter counts of model presets (total, encoder, heads).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", action="append", choices=list_presets(),
                        help="preset to describe (repeatable); default: all presets")
    parser.add_argument("--vocab-size", type=int, default=500, help="output vocabulary size (blank included)")
    parser.add_argument("--num-languages", type=int, default=0, help="add a language-ID head with this many classes")
    parser.add_argument("--feature-dim", type=int, default=80, help="input feature dimension")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    names = args.preset or list_presets()
    rows = [preset_row(name, args.vocab_size, args.num_languages, args.feature_dim) for name in names]
    print(format_table(rows))


if __name__ == "__main__":
    main()
