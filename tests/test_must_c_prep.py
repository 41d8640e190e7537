"""MuST-C preparation through lhotse's prepare_must_c with bad items reported and the repository's supervision
convention (text = English, custom translated_text = the target), on a hand-written corpus."""

from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import RecordingSet, SupervisionSet

from icefall_ext.bin import prepare_corpus
from icefall_ext.data.dataset import cut_translation

SR = 16000


def write_split(root: Path, split: str, talks, tgt: str = "it") -> None:
    """talks: [(talk, [(offset, duration, english, translation), ...], good_audio)]"""
    base = root / f"en-{tgt}" / "data" / split
    (base / "wav").mkdir(parents=True)
    (base / "txt").mkdir()
    yaml, en, tr = [], [], []
    for talk, segments, good in talks:
        path = base / "wav" / f"{talk}.wav"
        if good:
            end = max(o + d for o, d, _, _ in segments) + 0.5
            sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(int(end * SR)).astype("float32"), SR)
        else:
            path.write_bytes(b"RIFF0000WAVEjunk")  # truncated header
        for offset, duration, english, translation in segments:
            yaml.append(f"- {{duration: {duration:.6f}, offset: {offset:.6f}, rW: 3, uW: 0, "
                        f"speaker_id: spk.{talk}, wav: {talk}.wav}}\n")
            en.append(english + "\n")
            tr.append(translation + "\n")
    (base / "txt" / f"{split}.yaml").write_text("".join(yaml))
    (base / "txt" / f"{split}.en").write_text("".join(en))
    (base / "txt" / f"{split}.{tgt}").write_text("".join(tr))


def test_must_c_checked(tmp_path):
    corpus = tmp_path / "must-c"
    write_split(corpus, "train", [
        ("ted_1", [(0.5, 1.2, "I see two cats", "vedo due gatti"), (2.0, 1.0, "on monday", ""),
                   (3.5, 1.5, "we go to Italy", "andiamo in Italia")], True),
        ("ted_2", [(0.2, 1.0, "hello", "ciao")], False),
        ("ted_3", [(1.0, 2.0, "nine buses", "nove autobus")], True),
    ])
    for split in ("dev", "tst-COMMON", "tst-HE"):
        write_split(corpus, split, [(f"ted_{split}", [(0.1, 1.0, "good morning", "buongiorno")], True)])
    out = tmp_path / "manifests"
    prepare_corpus.main(["must-c", "--corpus-dir", str(corpus), "--output-dir", str(out), "-l", "it", "-j", "1"])

    sups = SupervisionSet.from_file(out / "must_c_supervisions_en-it_train.jsonl.gz").to_eager()
    recs = RecordingSet.from_file(out / "must_c_recordings_en-it_train.jsonl.gz").to_eager()
    assert sorted(r.id for r in recs) == ["ted_1", "ted_3"]  # the unreadable talk is left out
    got = sorted((s.recording_id, round(s.start, 3), round(s.duration, 3), s.text, s.language,
                  s.custom["translated_text"]["it"]) for s in sups)
    assert got == [("ted_1", 0.5, 1.2, "I see two cats", "en", "vedo due gatti"),
                   ("ted_1", 3.5, 1.5, "we go to Italy", "en", "andiamo in Italia"),
                   ("ted_3", 1.0, 2.0, "nine buses", "en", "nove autobus")]
    bad = (out / "bad_items_must_c_en-it.tsv").read_text().splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in bad) == ["en-it/train/1", "en-it/train/3"]
    # recordings point at the real corpus, not the temporary view
    assert all(Path(r.sources[0].source).resolve().is_relative_to(corpus.resolve()) for r in recs)

    class Cut:  # cut_translation reads the only translation of a MuST-C cut
        supervisions = [sups[0]]
    assert cut_translation(Cut) == sups[0].custom["translated_text"]["it"]
    assert {s.text for s in SupervisionSet.from_file(out / "must_c_supervisions_en-it_tst-HE.jsonl.gz")} == {"good morning"}
