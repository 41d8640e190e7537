"""utils/parse_options.sh and utils/stage.sh, run through bash like a recipe does."""

import re
import subprocess
import textwrap

import pytest

from conftest import ROOT, THREADS

SCRIPT = textwrap.dedent("""\
    #!/usr/bin/env bash
    # Demo recipe.
    #   --stage N  first stage
    set -euo pipefail
    stage=0
    stop_stage=100
    mini=false
    out_dir=out
    . {root}/utils/parse_options.sh
    . {root}/utils/stage.sh
    echo "stage=$stage stop_stage=$stop_stage mini=$mini out_dir=$out_dir rest=$*"
    if stage 1 "First" "$out_dir/.done.1"; then
      echo run1 >> "$out_dir/ran"
      mark_done "$out_dir/.done.1"
    fi
    if stage 2 "Second (fails when FAIL is set)" "$out_dir/.done.2"; then
      echo run2 >> "$out_dir/ran"
      if [ -n "${{FAIL:-}}" ]; then exit 3; fi
      mark_done "$out_dir/.done.2"
    fi
    if stage 3 "Third needs input" "$out_dir/.done.3"; then
      require "$out_dir/input.txt"
      mark_done "$out_dir/.done.3"
    fi
    """)


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "run.sh"
    path.write_text(SCRIPT.format(root=ROOT))
    (tmp_path / "out").mkdir()
    return path


def run(recipe, *args, env=None):
    import os

    e = dict(os.environ, **(env or {}))
    return subprocess.run(["bash", str(recipe), *args], cwd=recipe.parent, capture_output=True, text=True, env=e)


def test_options_set_declared_variables(recipe):
    r = run(recipe, "--stage", "3", "--stop-stage=5", "--mini", "true", "--out-dir", "out", "pos1")
    assert r.returncode == 1  # stage 3 requires out/input.txt, which is missing
    assert "stage=3 stop_stage=5 mini=true out_dir=out rest=pos1" in r.stdout


def test_unknown_option_is_one_line_error(recipe):
    r = run(recipe, "--no-such-option", "1")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "unknown option --no-such-option" in r.stderr


def test_option_without_value(recipe):
    r = run(recipe, "--stage")
    assert r.returncode == 1 and "needs a value" in r.stderr


def test_help_prints_header(recipe):
    r = run(recipe, "--help")
    assert r.returncode == 0
    assert r.stdout.splitlines()[:2] == ["Demo recipe.", "  --stage N  first stage"]


def test_stages_skip_when_done_and_rerun_after_failure(recipe):
    out = recipe.parent / "out"
    r = run(recipe, "--stop-stage", "2", env={"FAIL": "1"})
    assert r.returncode == 3
    assert (out / "ran").read_text().split() == ["run1", "run2"]
    assert (out / ".done.1").exists() and not (out / ".done.2").exists()
    r = run(recipe, "--stop-stage", "2")
    assert r.returncode == 0, r.stderr
    assert "Stage 1: First (skipped: done" in r.stdout
    assert (out / "ran").read_text().split() == ["run1", "run2", "run2"]  # only the failed stage ran again
    r = run(recipe, "--stop-stage", "2")
    assert (out / "ran").read_text().split() == ["run1", "run2", "run2"]


def test_stage_wall_times_are_recorded_for_stages_that_ran(recipe):
    out = recipe.parent / "out"
    table = recipe.parent / "stage_times.tsv"
    r = run(recipe, "--stop-stage", "2", env={"FAIL": "1"})
    assert r.returncode == 3
    rows = [line.split("\t") for line in table.read_text().splitlines()]
    assert [(n, d) for n, _, d in rows] == [("1", "First")]  # the failed stage 2 is not recorded
    (out / "input.txt").write_text("x")
    r = run(recipe)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in table.read_text().splitlines()]
    assert [n for n, _, _ in rows] == ["1", "2", "3"]  # stage 1 skipped this time: its row is kept
    assert all(int(seconds) >= 0 for _, seconds, _ in rows)
    assert rows[1][2] == "Second (fails when FAIL is set)"


def test_stage_range_and_missing_input(recipe):
    out = recipe.parent / "out"
    r = run(recipe, "--stage", "3", "--stop-stage", "3")
    assert r.returncode == 1
    assert "missing input out/input.txt" in r.stderr
    assert not (out / "ran").exists()  # stages 1-2 are outside the range
    (out / "input.txt").write_text("x")
    r = run(recipe, "--stage", "3", "--stop-stage", "3")
    assert r.returncode == 0 and (out / ".done.3").exists()


def test_config_file_is_overridden_by_command_line(recipe):
    conf = recipe.parent / "big.conf"
    conf.write_text("# a real-size setting\nstop_stage=0\nmini=true\nout_dir=elsewhere\n")
    r = run(recipe, "--stop-stage", "0", "--out-dir", "out", "--config", str(conf))
    assert r.returncode == 0, r.stderr
    assert "stage=0 stop_stage=0 mini=true out_dir=out rest=" in r.stdout
    r = run(recipe, "--config=" + str(recipe.parent / "missing.conf"))
    assert r.returncode == 1 and "config file" in r.stderr and "not found" in r.stderr


def test_abs_paths_resolves_against_the_callers_directory(tmp_path):
    script = textwrap.dedent("""\
        set -euo pipefail
        . {root}/utils/stage.sh
        echo "pwd=$PWD"
        rel=data/train.tsv dotted=./a/../b/./c//d/ up=../x/../y abs=/data/../corpus empty= spaced="my corpus/x"
        dot=. list="cuts/a.jsonl.gz  /abs/b.jsonl.gz ../c.jsonl.gz" one_word=cuts/one.jsonl.gz no_list=
        abs_paths rel dotted up abs empty spaced dot
        abs_paths --words list one_word no_list
        cd /  # as run.sh cd's into its work dir: the values no longer depend on the current directory
        for v in rel dotted up abs empty spaced dot list one_word no_list; do echo "$v=${{!v}}"; done
        """).format(root=ROOT)
    caller = tmp_path / "caller"
    caller.mkdir()
    r = subprocess.run(["bash", "-c", script], cwd=caller, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = dict(line.split("=", 1) for line in r.stdout.splitlines())
    pwd = got.pop("pwd")
    parent = pwd.rsplit("/", 1)[0]
    assert got == {
        "rel": f"{pwd}/data/train.tsv",
        "dotted": f"{pwd}/b/c/d",  # '.', '..' and repeated or trailing '/' normalised; need not exist
        "up": f"{parent}/y",
        "abs": "/data/../corpus",  # absolute: left as it is
        "empty": "",  # empty: stays empty, so that the recipe's default applies later
        "spaced": f"{pwd}/my corpus/x",  # a single path may hold spaces
        "dot": pwd,
        "list": f"{pwd}/cuts/a.jsonl.gz /abs/b.jsonl.gz {parent}/c.jsonl.gz",  # --words: each word resolved
        "one_word": f"{pwd}/cuts/one.jsonl.gz",
        "no_list": "",
    }


def test_path_options_and_config_are_relative_to_the_caller_defaults_to_the_work_dir(tmp_path):
    """The plumbing of every run.sh: parse, abs_paths, cd into the work dir, then `pick` defaults."""
    recipe = tmp_path / "recipe" / "run.sh"
    recipe.parent.mkdir()
    recipe.write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        set -euo pipefail
        work_dir=
        corpus_dir=
        data=
        mini=false
        . {root}/utils/parse_options.sh
        . {root}/utils/stage.sh
        abs_paths work_dir corpus_dir data
        mkdir -p "$work_dir"
        cd "$work_dir"
        pick corpus_dir download mini_corpus
        echo "work=$(pwd -P) corpus_dir=$corpus_dir data=$data mini=$mini"
        require "$data"
        """).format(root=ROOT))
    caller = tmp_path / "caller"
    (caller / "conf").mkdir(parents=True)
    (caller / "conf/paths.conf").write_text("mini=true\ndata=inputs/table.tsv\n")
    (caller / "inputs").mkdir()
    (caller / "inputs/table.tsv").write_text("audio\ttext\n")
    r = subprocess.run(["bash", str(recipe), "--config", "conf/paths.conf", "--work-dir", "out/w"], cwd=caller,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    c = caller.resolve()
    assert f"work={c}/out/w corpus_dir=mini_corpus data={c}/inputs/table.tsv mini=true" in r.stdout
    r = subprocess.run(["bash", str(recipe), "--work-dir", "w2", "--corpus-dir", "../corpora", "--data",
                        "inputs/../inputs/table.tsv"], cwd=caller, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"work={c}/w2 corpus_dir={c.parent}/corpora data={c}/inputs/table.tsv mini=false" in r.stdout


def test_template_readme_example_with_relative_paths(tmp_path, tiny_corpus):
    """README, "Adapting to a new corpus": tables, --init-from, --mix-cuts and --work-dir given relative to the
    directory run.sh is called from, through import (stage 0) and fine-tuning from the checkpoint (stage 3)."""
    import json
    import shutil

    from icefall_ext.data.tokenizer import read_tokens_txt
    from icefall_ext.models.presets import build_model, model_config_from_preset
    from icefall_ext.train.checkpoint import save_checkpoint

    caller = tmp_path / "caller"
    (caller / "clips").mkdir(parents=True)
    rows = []
    for i, text in enumerate(tiny_corpus["texts"]):
        wav = next(tiny_corpus["dir"].glob(f"*-{i}.wav"))
        shutil.copy(wav, caller / "clips" / wav.name)
        rows.append(f"clips/{wav.name}\t{text}\n")  # paths relative to the table's folder
    (caller / "train.tsv").write_text("audio\ttext\n" + "".join(rows))
    (caller / "dev.tsv").write_text("audio\ttext\n" + "".join(rows[::3]))
    tokens = read_tokens_txt(tiny_corpus["lang_dir"] / "tokens.txt")
    config = model_config_from_preset("conformer-tiny", vocab_size=len(tokens))
    (caller / "models/base").mkdir(parents=True)
    save_checkpoint(caller / "models/base/epoch-1.pt",
                    {"model": build_model(config).state_dict(), "model_config": config, "tokens": tokens})
    (caller / "orig").mkdir()
    shutil.copy(tiny_corpus["cuts"], caller / "orig/cuts_train.jsonl.gz")

    cmd = ["bash", str(ROOT / "egs/TEMPLATE/run.sh"), "--name", "mycorpus", "--train", "train.tsv", "--dev",
           "dev.tsv", "--init-from", "models/base", "--lr", "0.01", "--scheduler", "constant",
           "--mix-cuts", "orig/cuts_train.jsonl.gz", "--mix-ratio", "0.2", "--work-dir", "work",
           "--stop-stage", "3", "--max-updates", "1", "--max-duration", "40", "--threads", THREADS,
           "--spec-augment", "false"]
    r = subprocess.run(cmd, cwd=caller, capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    work = caller / "work"
    assert (work / "data/manifests/mycorpus_supervisions_train.jsonl.gz").is_file()
    assert "model architecture taken from" in log and "initialised from" in log
    assert re.search(r"mixed in \d+ original cuts", log)
    record = json.loads((work / "exp/mycorpus-ctc/train_config.json").read_text())
    assert record["init_from"] == str((caller / "models/base/epoch-1.pt").resolve())
    assert record["mix_cuts"] == [str((caller / "orig/cuts_train.jsonl.gz").resolve())]
