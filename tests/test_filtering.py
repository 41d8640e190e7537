"""Bad training input is counted by reason, logged with ids, and skipped — never a crash, never silent."""

import logging

from lhotse import CutSet, MonoCut, SupervisionSegment
from lhotse.features.base import Features

from icefall_ext.data.filtering import filter_cuts
from icefall_ext.data.tokenizer import CharTokenizer


def cut(cid, text, duration=2.0, features=True):
    c = MonoCut(id=cid, start=0.0, duration=duration, channel=0,
                supervisions=[SupervisionSegment(id=cid, recording_id=cid, start=0, duration=duration, text=text,
                                                 language="en")])
    if features:
        c.features = Features(type="x", num_frames=int(duration * 100), num_features=80, frame_shift=0.01,
                              sampling_rate=16000, start=0, duration=duration, storage_type="lilcom_chunky",
                              storage_path="/nonexistent", storage_key="0")
    return c


def test_each_bad_input_is_reported(caplog):
    tok = CharTokenizer.build(["hello world"])
    cuts = CutSet.from_cuts([
        cut("ok", "hello world"),
        cut("empty", "   "),
        cut("oov", "hello wörld"),
        cut("long", "hello", duration=40.0),
        cut("short", "hello", duration=0.1),
        cut("nofeat", "hello", features=False),
    ])
    with caplog.at_level(logging.INFO):
        kept, report = filter_cuts(cuts, can_encode=tok.can_encode, max_duration=30.0)
        report.log("train")
    assert [c.id for c in kept] == ["ok"]
    assert report.num_in == 6 and report.num_kept == 1
    assert dict(report.dropped) == {
        "empty transcript": ["empty"],
        "characters outside the token table": ["oov"],
        "longer than 30.0s": ["long"],
        "shorter than 0.3s": ["short"],
        "no features": ["nofeat"],
    }
    assert "dropped 1 cuts (empty transcript): empty" in caplog.text
