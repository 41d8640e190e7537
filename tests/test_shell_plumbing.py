"""utils/parse_options.sh and utils/stage.sh, run through bash like a recipe does."""

import subprocess
import textwrap

import pytest

from conftest import ROOT

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
