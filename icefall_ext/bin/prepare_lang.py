"""Build the token table (characters or sentencepiece BPE) and the language list from training cuts.

Writes ``<lang-dir>/tokens.txt`` (``<blk> 0`` first), ``languages.txt`` (one code per line: the LID classes),
``transcript.txt`` (training text) and, for BPE, ``bpe.model``.

    python -m icefall_ext.bin.prepare_lang --cuts data/fbank/cv-*_cuts_train.jsonl.gz --lang-dir data/lang_char
    python -m icefall_ext.bin.prepare_lang --cuts ... --token-type bpe --vocab-size 500 --lang-dir data/lang_bpe_500
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from ..common import atomic_write_text, die, setup_logging

logger = logging.getLogger("icefall_ext.prepare_lang")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", type=Path, nargs="+", required=True, help="training cut manifests")
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--token-type", choices=["char", "bpe"], default="char")
    p.add_argument("--vocab-size", type=int, default=500, help="BPE vocabulary size")
    p.add_argument("--min-count", type=int, default=1,
                   help="characters seen fewer times are left out of the table (their utterances are dropped "
                        "from training and reported)")
    p.add_argument("--text", choices=["transcript", "translation"], default="transcript",
                   help="what to tokenise: the transcripts, or the English translations (speech translation targets)")
    p.add_argument("--lowercase", default="false", choices=["true", "false"], help="lower-case the text first")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    from lhotse import CutSet

    from ..data.dataset import cut_language, cut_text, cut_translation, write_languages
    from ..data.tokenizer import BpeTokenizer, CharTokenizer

    missing = [str(p) for p in args.cuts if not p.is_file()]
    if missing:
        die(f"missing cut manifests: {' '.join(missing)}")
    texts, languages = [], set()
    for path in args.cuts:
        for cut in CutSet.from_file(path):
            text = cut_text(cut) if args.text == "transcript" else cut_translation(cut)
            if text:
                texts.append(text.lower() if args.lowercase == "true" else text)
            lang = cut_language(cut)
            if lang:
                languages.add(lang)
    if not texts:
        die("no transcripts in the given cuts")
    args.lang_dir.mkdir(parents=True, exist_ok=True)
    if args.token_type == "char":
        tok = CharTokenizer.build(texts, min_count=args.min_count)
        tok.save(args.lang_dir)
    else:
        tok = BpeTokenizer.train(texts, args.lang_dir, args.vocab_size)
    write_languages(sorted(languages), args.lang_dir / "languages.txt")
    atomic_write_text(args.lang_dir / "transcript.txt", "\n".join(texts) + "\n")
    logger.info("%s: %d tokens, %d languages (%s), %d transcripts", args.lang_dir, tok.vocab_size,
                len(languages), " ".join(sorted(languages)), len(texts))


if __name__ == "__main__":
    main()
