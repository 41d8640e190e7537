#!/usr/bin/env bash
# Copy-me recipe: train, decode and export an ASR model for your own corpus.
#
# Usage: egs/TEMPLATE/run.sh --train SRC --dev SRC [--test SRC] [--option value ...]
# where each SRC is a Kaldi data directory (wav.scp, text; optional segments, utt2spk, utt2lang, spk2gender) or a
# .tsv/.csv table with a header row (audio, text; optional id, language, speaker, start, end).
# Audio of any sampling rate (8 kHz telephone speech included) is resampled to 16 kHz for the features.
#
# Stages:
#   0  import the corpus into lhotse manifests (bad entries are reported by id and skipped)
#   1  fbank features (kaldi-native-fbank at 16 kHz, as sherpa-onnx computes them)
#   2  token table: characters or sentencepiece BPE (tokens.txt with <blk> 0)
#   3  train: CTC, transducer or hybrid, any preset; or fine-tune a trained model with --init-from
#   4  decode dev and test (CTC greedy / transducer greedy), WER/CER per language in exp/<name>/decode
#   5  export to sherpa-onnx (exp/<name>/onnx: model files + tokens.txt)
#   6  decode the test set with sherpa-onnx from the exported files
#
# Main options:
#   --train, --dev, --test   corpus parts (see above); --test defaults to --dev
#   --name mycorpus          corpus name (manifest prefix)
#   --exp-name               experiment directory under exp/ (default: <name>-<heads>)
#   --language ""            language of utterances that do not name one (utt2lang / language column)
#   --work-dir               where data/ and exp/ go (default: this recipe's directory)
#   --token-type char        char or bpe;  --vocab-size 500 (bpe)
#   --heads ctc              ctc, transducer or hybrid;  --preset conformer-mini (see `python -m icefall_ext.bin.model_info`)
#   --init-from ""           exp dir or checkpoint to start from: the encoder is kept, and output layers are rebuilt
#                            for this token table with the rows of shared tokens copied (the architecture is the
#                            checkpoint's: --preset and --heads are then ignored)
#   --freeze-encoder false   train only the heads (with --init-from)
#   --mix-cuts ""            cut manifests of the original training data, mixed in against forgetting ...
#   --mix-ratio 0            ... as this fraction of the training audio
#   --max-updates 2000, --num-epochs 0, --lr 0.045 (from scratch; 0.01 is a good start for --init-from)
#   --max-duration 200 (seconds of audio per batch), --world-size 1, --dtype float32 (auto: bf16 where native)
#   --export-type auto       auto, ctc, transducer, or streaming-transducer (needs a causal encoder)
# Relative paths (--train, --dev, --test, --init-from, --mix-cuts, --work-dir) are taken from the directory run.sh is
# called from; a table's audio paths are relative to the table's folder.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

stage=0
stop_stage=6
work_dir=
train=
dev=
test=
name=mycorpus
exp_name=
language=
token_type=char
vocab_size=500
heads=ctc
preset=conformer-mini
init_from=
freeze_encoder=false
mix_cuts=
mix_ratio=0
model_overrides="{}"
max_updates=2000
num_epochs=0
lr=0.045
scheduler=eden
warmup_updates=
max_duration=200
spec_augment=true
world_size=1
dtype=float32
threads=0
seed=42
avg=1
export_type=auto

. "$root/utils/parse_options.sh"
. "$root/utils/stage.sh"
abs_paths work_dir train dev test init_from  # relative to where run.sh is called from, before the cd
abs_paths --words mix_cuts
mkdir -p "${work_dir:=$here}"
cd "$work_dir"

[ -n "$train" ] && [ -n "$dev" ] || die "--train and --dev are required (a Kaldi data dir or a .tsv/.csv table each)"
test=${test:-$dev}
fbank=data/fbank
lang=data/lang_$token_type
[ "$token_type" = bpe ] && lang=data/lang_bpe_$vocab_size
exp=exp/${exp_name:-$name-$heads}
cuts() { echo "$fbank/${name}_cuts_$1.jsonl.gz"; }

if stage 0 "Import the corpus (Kaldi dir / TSV) into lhotse manifests" data/manifests/.done.$name; then
  for part in train dev test; do
    python -m icefall_ext.bin.import_corpus --source "${!part}" --prefix "$name" --part $part \
      --out-dir data/manifests ${language:+--language "$language"}
  done
  mark_done data/manifests/.done.$name
fi

if stage 1 "Fbank features (16 kHz)" $fbank/.done.$name; then
  python -m icefall_ext.bin.compute_fbank --manifest-dir data/manifests --glob "$name" --out-dir $fbank \
    --sampling-rate 16000 --num-jobs 2
  mark_done $fbank/.done.$name
fi

if stage 2 "Token table ($token_type)" $lang/.done; then
  python -m icefall_ext.bin.prepare_lang --cuts "$(cuts train)" --token-type "$token_type" \
    --vocab-size "$vocab_size" --lang-dir $lang
  mark_done $lang/.done
fi

if stage 3 "Train $exp" $exp/.done; then
  if [ -n "$init_from" ]; then
    model=(--init-from "$init_from" --freeze-encoder "$freeze_encoder")
  else
    model=(--preset "$preset" --heads "$heads" --model-overrides "$model_overrides")  # JSON may hold spaces
  fi
  python -m icefall_ext.bin.train --exp-dir $exp --lang-dir $lang --train-cuts "$(cuts train)" \
    --valid-cuts "$(cuts dev)" "${model[@]}" ${mix_cuts:+--mix-cuts $mix_cuts --mix-ratio $mix_ratio} \
    --lr "$lr" --scheduler "$scheduler" --warmup-updates "${warmup_updates:-$((max_updates / 10 + 1))}" \
    --max-updates "$max_updates" --num-epochs "$num_epochs" --max-duration "$max_duration" \
    --optimizer scaled_adam --spec-augment "$spec_augment" --world-size "$world_size" --dtype "$dtype" \
    --threads "$threads" --seed "$seed"
  mark_done $exp/.done
fi

if stage 4 "Decode dev and test" $exp/.done.decode; then
  python -m icefall_ext.bin.decode --exp-dir $exp --lang-dir $lang --avg "$avg" --threads "$threads" \
    --cuts dev="$(cuts dev)" test="$(cuts test)" --method auto
  mark_done $exp/.done.decode
fi

if stage 5 "Export to sherpa-onnx" $exp/onnx/.done; then
  python -m icefall_ext.bin.export_onnx --exp-dir $exp --lang-dir $lang --avg "$avg" --type "$export_type" \
    --out-dir $exp/onnx
  mark_done $exp/onnx/.done
fi

if stage 6 "Decode the test set with sherpa-onnx" $exp/.done.sherpa; then
  python -m icefall_ext.bin.sherpa_decode --onnx-dir $exp/onnx --cuts test="$(cuts test)" \
    --out-dir $exp/sherpa-decode
  mark_done $exp/.done.sherpa
fi

log "Done (stages $stage..$stop_stage). Model: $exp/onnx; scores: $exp/decode/results.tsv, $exp/sherpa-decode/results.tsv"
