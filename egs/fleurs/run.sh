#!/usr/bin/env bash
# USM-style self-supervised pre-training on FLEURS (Zhang et al. 2023, "Google USM: Scaling automatic speech
# recognition beyond 100 languages"): a Conformer encoder pre-trained with BEST-RQ (multi-softmax codebooks) on
# untranscribed audio, then fine-tuned with CTC on all FLEURS languages pooled, and as a FLEURS language-ID
# classifier; each compared with the same model trained from scratch. Then three USM methods on top of the CTC
# model: per-language residual adapters on the frozen encoder, noisy-student training on the untranscribed pool, and
# chunk-wise attention for long-form audio.
#
# Usage: egs/fleurs/run.sh [--stage N] [--stop-stage M] [--mini true] [--option value ...]
#
# Stages:
#   0  corpus: --mini true synthesises FLEURS (11 languages, a few minutes to ~20 min of labelled audio each) and
#      an untranscribed pool with espeak-ng; real data: lhotse's download_fleurs (needs the network and the
#      `datasets` package), or a corpus dir laid out as it writes it (<corpus>/<code>/{train,dev,test}/*.wav and
#      <corpus>/metadata/<code>/<split>.tsv), passed as --fleurs-dir
#   1  lhotse manifests (FLEURS through lhotse's prepare_fleurs, bad items reported by id and skipped; the
#      untranscribed pool: one folder per language under --pool-dir)
#   2  fbank features (--num-mel-bins 80; USM uses 128)
#   3  character table of all FLEURS training transcripts, language list
#   4  BEST-RQ pre-training with --codebooks codebooks (USM: 16) on the pool and the FLEURS training audio
#   5  the ablation: BEST-RQ with 1 codebook, same budget (USM Table 5: 16 vs 1 softmax)
#   6  CTC fine-tuning on FLEURS from each pre-trained encoder (output layer alone first: --head-first-updates), and
#      from scratch (same updates, same data)
#   7  FLEURS language ID: an utterance-level classifier on the encoder, from the pre-trained encoder and from
#      scratch; the loss weighs each language equally (--lid-balance: FLEURS' training hours differ a lot between
#      languages, its dev/test sets much less)
#   8  continued training of the CTC model from BEST-RQ (USM Table 3 / Table 7 arms, same updates each): all
#      weights; per-language residual adapters on the frozen encoder (+ output layer); the output layer alone on the
#      frozen encoder; all weights with local attention (--local-frames past/future frames, USM: 128)
#   9  noisy student (USM Table 4): generation 0's teacher (exp/ns-0) is --ns-teacher trained the student's way
#      on the labelled audio alone (the best supervised model, as Park et al. 2020's teacher); the teacher labels
#      the pool, labels filtered by character rate (bounds from the labelled data) and confidence
#      (--ns-keep-fraction per language), the student trains with SpecAugment on labelled + pseudo-labelled audio
#      (--ns-pl-ratio of the duration); --ns-generations N, each student teaching the next. The control: generation
#      0's teacher trained on the same way on the labelled audio alone for as many updates as all students (what
#      the pseudo-labels add beyond the extra updates and the noise). The teacher labels by CTC
#      prefix beam search with each language's word n-gram (Park et al. 2020's LM-fused labels) where
#      --lm-text-dir has <code>.txt (a word --ns-lm-order-gram per language, LM weight and word bonus tuned on
#      dev for each teacher), else greedily
#  10  evaluation: CER per language (greedy) of every CTC model; language-ID accuracy and confusion matrices;
#      long-form recordings decoded whole (full, chunk-wise --chunk-seconds, local attention) and crop-and-stitch
#  11  export the pre-trained CTC model to sherpa-onnx and decode the test set with it; the adapter model folded for
#      one language (the first of --languages) and decoded with sherpa-onnx on that language
#  12  RESULTS.md (all tables, BEST-RQ curves, wall time of each stage)
#
# Main options (real-data default / --mini default):
#   --mini false            build and use the built-in mini corpus
#   --work-dir              where data/, exp/ and RESULTS.md go (default: this recipe's directory)
#   --fleurs-dir            FLEURS root as download_fleurs writes it (default: download/fleurs; mini: generated)
#   --pool-dir              untranscribed audio, one folder per language code (real: none unless given)
#   --languages             FLEURS codes (mini: the 11 of the mini corpus; real: pass yours, e.g. en_us de_de ...)
#   --preset                conformer-medium / conformer-mini (the Zipformer presets work too)
#   --num-mel-bins 80       feature dimension (128 as USM)
#   --codebooks 16          BEST-RQ codebooks (softmax heads) of the main pre-training
#   --num-codes 8192 / 256  codewords per codebook
#   --mask-prob 0.01 / 0.04, --mask-frames 40 / 10: spans of 400 ms / 100 ms, about a third of the frames masked.
#      Mini: 400 ms spans over 1024 codes left the masked accuracy at the commonest code's share (6%) for 400
#      updates, and CTC from that encoder as stuck as from scratch; 100 ms spans over 256 codes learn (RESULTS.md)
#   --pretrain-updates, --ctc-updates, --lid-updates   training lengths (mini: the recipe ran ~24 min on 2 CPU cores with native bf16;
#      43 min on a float32-only EPYC: README)
#   --ctc-eden-lr-batches 7500 / a quarter of --ctc-updates: Eden's decay of the CTC runs (teacher and student);
#      mini, flat: dev CER of one run went 38.1 -> 42.1 between updates 300 and 400, which decided the 16-vs-1 order
#   --pretrain-lr, --ctc-lr, --lid-lr, --max-duration, --world-size, --dtype bfloat16 / auto, --threads
#   --spec-augment true / false   SpecAugment in the supervised runs (the noisy student always has it). Mini: off;
#      with it, 400 CTC updates often ended on the all-blank plateau (dev CER 93-97% from scratch and from BEST-RQ,
#      seed 7), without it both reach ~41%
#   --head-first-updates 2000 / 60   runs from a pre-trained encoder first train the new output layer alone on the
#      frozen encoder for this many of their updates (wav2vec 2.0's freeze_finetune_updates), then everything: the
#      layer learns to read the pre-trained features before its random gradients reach them (mini, seed 7: from
#      BEST-RQ without it the CTC run sat on the blank plateau to update 300 while from scratch escaped at 200)
#   --ft-updates, --ft-lr   stage 8 (AdamW: ScaledAdam cannot move the zero-initialised adapter projections)
#   --adapter-fraction 0.02 adapter parameters per language / encoder parameters (USM: 2.3%)
#   --ns-generations 1, --ns-keep-fraction 0.8, --ns-pl-ratio 0.5   noisy student
#   --ns-teacher ft-adapters   where generation 0's teacher starts (a run under exp/): the adapter model of stage 8,
#      the best supervised model (its labels of the pool: CER 31.0 in the mini vs 37.9 from ctc-bestrq-16); or
#      ctc-bestrq-16
#   --ns-teacher-updates 5000 / 1500   updates of generation 0's teacher (--ns-teacher trained the students' way).
#      A student only shows what its labels add if its teacher has stopped gaining from more labelled updates.
#      Mini (test CER): with 300, the labelled-only control gained 2.1 in 300 more updates and the student trailed
#      it (26.1 vs 25.9); with 1500 (dev CER 29.0 at 300, 23.4 at 1500) the control lost (22.1 -> 23.2) and the
#      student gained (21.4, WER 74.1 vs 76.0)
#   --ns-updates 5000 / 300 the student continues from its teacher's weights, every weight trained (AdamW, --ft-lr),
#      for this many updates. Mini: labels at 38% CER from ctc-bestrq-16 added nothing over the labelled-only control
#      (150/300/600 updates: test 35.7/35.9/34.1 vs 37.1/34.5/33.0); a student re-initialised from BEST-RQ (Park et
#      al. 2020) with the teacher's 400 updates ended 4.6 CER behind it (half its updates on pool audio)
#   --ns-time-masks 10 / 2  SpecAugment time masks of the student (its noise; 10 as icefall's LibriSpeech recipes)
#   --lm-text-dir           LM text per language, <code>.txt, one sentence per line (FLEURS ships none: e.g. each
#      language's Wikipedia or Common Crawl text without the FLEURS sentences; real: none unless given, then
#      greedy labels; mini: generated, 5000 sentences per language, none heard in any clip)
#   --ns-lm true, --ns-lm-order 3, --ns-lm-beam 8, --ns-lm-alphas 0.25,0.5,1.0, --ns-lm-betas 0.5,1.5,2.5
#      LM-fused pseudo-labels (false: greedy even with --lm-text-dir) and the tune_lm grid
#   --chunk-seconds 8       chunk of chunk-wise attention (USM: 8 s); --local-frames 128 (local attention)
#   --crop-seconds 10       crop-and-stitch decoding of the long-form set, for comparison
# Relative paths given as options are taken from the directory run.sh is called from.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

stage=0
stop_stage=12
mini=false
work_dir=
seed=42
corpus_dir=
fleurs_dir=
pool_dir=
languages=
mini_scale=1.0
preset=
num_mel_bins=80
codebooks=16
num_codes=
mask_prob=
mask_frames=
pretrain_updates=
pretrain_lr=
ctc_updates=
ctc_lr=
ctc_eden_lr_batches=
lid_updates=
lid_lr=
ft_updates=
ft_lr=
adapter_fraction=0.02
ns_generations=1
ns_keep_fraction=0.8
ns_pl_ratio=0.5
ns_time_masks=
ns_teacher=ft-adapters
ns_teacher_updates=
ns_updates=
lm_text_dir=
ns_lm=true
ns_lm_order=3
ns_lm_beam=8
ns_lm_alphas=0.25,0.5,1.0
ns_lm_betas=0.5,1.5,2.5
chunk_seconds=8
local_frames=128
crop_seconds=10
longform_dir=
max_duration=
world_size=1
dtype=
threads=0
valid_every=
spec_augment=
head_first_updates=

. "$root/utils/parse_options.sh"
. "$root/utils/stage.sh"
abs_paths work_dir corpus_dir fleurs_dir pool_dir longform_dir lm_text_dir
mkdir -p "${work_dir:=$here}"
cd "$work_dir"

pick corpus_dir download mini_corpus
pick fleurs_dir "$corpus_dir/fleurs" "$corpus_dir/fleurs"
pick pool_dir "" "$corpus_dir/unlabelled"
pick languages "" "en_us de_de fr_fr es_419 it_it ru_ru pt_br nl_nl pl_pl sv_se fi_fi"
pick preset conformer-medium conformer-mini
pick num_codes 8192 256
pick mask_prob 0.01 0.04
pick mask_frames 40 10
pick max_duration 600 40
pick dtype bfloat16 auto  # auto: bf16 autocast where the CPU has it natively (precision.py), else float32
pick pretrain_updates 100000 300
pick pretrain_lr 0.045 0.045
pick ctc_updates 20000 400
pick ctc_lr 0.045 0.045
pick ctc_eden_lr_batches 7500 $((ctc_updates / 4))
pick lid_updates 5000 600
pick lid_lr 0.045 0.003
pick valid_every 2000 100
pick ft_updates 5000 150
pick ft_lr 0.0005 0.001
pick spec_augment true false
pick head_first_updates 2000 60
pick ns_time_masks 10 2
pick ns_updates 5000 300
pick ns_teacher_updates 5000 1500
pick longform_dir "" "$corpus_dir/longform"
pick lm_text_dir "" "$corpus_dir/fleurs_lm"
[ -n "$languages" ] || die "--languages is required with real data (FLEURS codes such as en_us fi_fi)"

fbank=data/fbank
lang=data/lang_char
fleurs_cuts() { for l in $languages; do printf '%s ' "$fbank/fleurs-${l}_cuts_$1.jsonl.gz"; done; }
pool_cuts() { [ -n "$pool_dir" ] && for l in $languages; do
  [ -f "$fbank/pool_cuts_$l.jsonl.gz" ] && printf '%s ' "$fbank/pool_cuts_$l.jsonl.gz"; done; true; }
train() { python -m icefall_ext.bin.train --seed "$seed" --world-size "$world_size" --dtype "$dtype" \
  --threads "$threads" --max-duration "$max_duration" --valid-every-n "$valid_every" --optimizer scaled_adam \
  --num-epochs 0 --scheduler eden --spec-augment "$spec_augment" "$@"; }
# the ASR/LID runs: from a trained model (--init-from DIR) or from scratch (--preset)
finetune() { local exp=$1 from=$2; shift 2
  if [ "$from" = scratch ]; then set -- --preset "$preset" "$@"; else set -- --init-from "$from" "$@"; fi
  train --exp-dir "$exp" --lang-dir $lang --train-cuts $(fleurs_cuts train) --valid-cuts $fbank/fleurs_cuts_dev.jsonl.gz "$@"; }
# the same from a BEST-RQ encoder (or from scratch) with N updates in all: from BEST-RQ the new output layer trains
# alone on the frozen encoder for the first --head-first-updates of them (in $exp/head), then everything
from_pretrained() { local exp=$1 from=$2 n=$3 lr=$4; shift 4
  if [ "$from" = scratch ] || [ "$head_first_updates" -le 0 ]; then
    finetune "$exp" "$from" --lr "$lr" --max-updates "$n" --warmup-updates $((n / 10)) "$@"; return; fi
  head_first "$exp" "$from" "$n" "$head_first_updates" finetune --lr "$lr" "$@"; }

if stage 0 "Corpus" "$corpus_dir/.done"; then
  if [ "$mini" = true ]; then
    python "$root/local/make_mini_corpus.py" --layout fleurs --out "$corpus_dir" --seed "$seed" --scale "$mini_scale" \
      --num-jobs 2 --longform $(for l in en_us de_de fr_fr es_419; do case " $languages " in *" $l "*) echo $l;; esac; done)
  elif [ ! -d "$fleurs_dir/metadata" ]; then
    # lhotse writes <target>/fleurs/<code>/... and <target>/fleurs/metadata/...
    [ "$(basename "$fleurs_dir")" = fleurs ] || die "--fleurs-dir must end in /fleurs for the download (or hold FLEURS)"
    python -c "import sys; from lhotse.recipes.fleurs import download_fleurs; download_fleurs(sys.argv[1], sys.argv[2:])" \
      "$(dirname "$fleurs_dir")" $languages || die "download_fleurs failed (it needs the network and the datasets
package); download FLEURS by hand into $fleurs_dir (<code>/{train,dev,test}/*.wav, metadata/<code>/<split>.tsv)"
  fi
  mark_done "$corpus_dir/.done"
fi

if stage 1 "Manifests" data/manifests/.done; then
  require "$fleurs_dir"
  python -m icefall_ext.bin.prepare_corpus fleurs --corpus-dir "$fleurs_dir" --output-dir data/manifests -j 2 \
    -l $languages
  if [ -n "$pool_dir" ]; then
    python -m icefall_ext.bin.prepare_corpus unlabelled-audio --corpus-dir "$pool_dir" --output-dir data/manifests \
      --name pool -j 2 -l $(for l in $languages; do [ -d "$pool_dir/$l" ] && printf '%s ' $l; done)
  fi
  if [ -n "$longform_dir" ]; then
    python -m icefall_ext.bin.prepare_corpus longform --corpus-dir "$longform_dir" --output-dir data/manifests -j 2 \
      -l $(for l in $languages; do [ -f "$longform_dir/$l/transcripts.tsv" ] && printf '%s ' $l; done)
  fi
  mark_done data/manifests/.done
fi

if stage 2 "Fbank features ($num_mel_bins bins)" $fbank/.done; then
  fb="python -m icefall_ext.bin.compute_fbank --manifest-dir data/manifests --out-dir $fbank --num-jobs 2 \
--num-mel-bins $num_mel_bins"
  $fb --glob 'fleurs-*'
  [ -n "$pool_dir" ] && $fb --glob 'pool'
  [ -n "$longform_dir" ] && $fb --glob 'longform-*'
  for split in dev test; do lhotse combine $(fleurs_cuts $split) $fbank/fleurs_cuts_$split.jsonl.gz; done
  mark_done $fbank/.done
fi

if stage 3 "Character table and language list" $lang/.done; then
  python -m icefall_ext.bin.prepare_lang --cuts $(fleurs_cuts train) --lang-dir $lang
  mark_done $lang/.done
fi

pretrain() { local exp=$1 n=$2
  train --exp-dir "$exp" --pretrain best-rq --preset "$preset" --train-cuts $(pool_cuts) $(fleurs_cuts train) \
    --valid-cuts $fbank/fleurs_cuts_dev.jsonl.gz --lr "$pretrain_lr" --max-updates "$pretrain_updates" \
    --warmup-updates $((pretrain_updates / 10)) --spec-augment false --bestrq-codebooks "$n" \
    --bestrq-num-codes "$num_codes" --bestrq-mask-prob "$mask_prob" --bestrq-mask-frames "$mask_frames"; }

if stage 4 "BEST-RQ pre-training, $codebooks codebooks" exp/bestrq-$codebooks/.done; then
  pretrain exp/bestrq-$codebooks "$codebooks"
  mark_done exp/bestrq-$codebooks/.done
fi

if stage 5 "BEST-RQ pre-training, 1 codebook (ablation)" exp/bestrq-1/.done; then
  [ "$codebooks" = 1 ] || pretrain exp/bestrq-1 1
  mark_done exp/bestrq-1/.done
fi

if stage 6 "CTC fine-tuning from each pre-trained encoder and from scratch" exp/.done.ctc; then
  for from in bestrq-$codebooks bestrq-1 scratch; do
    [ -f exp/ctc-$from/.done ] && continue
    src=$from; [ "$from" = scratch ] || src=exp/$from
    from_pretrained exp/ctc-$from $src "$ctc_updates" "$ctc_lr" --heads ctc --eden-lr-batches "$ctc_eden_lr_batches"
    mark_done exp/ctc-$from/.done
  done
  mark_done exp/.done.ctc
fi

if stage 7 "Language ID from the pre-trained encoder and from scratch" exp/.done.lid; then
  for from in bestrq-$codebooks scratch; do
    [ -f exp/lid-$from/.done ] && continue
    src=$from; [ "$from" = scratch ] || src=exp/$from
    from_pretrained exp/lid-$from $src "$lid_updates" "$lid_lr" --heads lid --lid-scale 1.0 --ctc-scale 0 \
      --lid-balance true
    mark_done exp/lid-$from/.done
  done
  mark_done exp/.done.lid
fi

# continued training of a CTC model (AdamW): EXP FROM N [ARGS]
continue_from() { local exp=$1 from=$2 n=$3; shift 3
  finetune "$exp" "$from" --heads ctc --optimizer adamw --lr "$ft_lr" --max-updates "$n" --warmup-updates $((n / 10)) "$@"; }
# stage 8's arms: continued training of the CTC model fine-tuned from BEST-RQ
continue_ctc() { local exp=$1; shift; continue_from "$exp" exp/ctc-bestrq-$codebooks "$ft_updates" "$@"; }

if stage 8 "Residual adapters on the frozen encoder vs full fine-tuning vs head only; local attention" \
    exp/.done.ft; then
  [ -f exp/ft-full/.done ] || { continue_ctc exp/ft-full; mark_done exp/ft-full/.done; }
  [ -f exp/ft-adapters/.done ] || { continue_ctc exp/ft-adapters --freeze-encoder true --adapters true \
    --adapter-fraction "$adapter_fraction"; mark_done exp/ft-adapters/.done; }
  [ -f exp/ft-head/.done ] || { continue_ctc exp/ft-head --freeze-encoder true; mark_done exp/ft-head/.done; }
  [ -f exp/ft-local/.done ] || { continue_ctc exp/ft-local --attention local --attention-left-frames "$local_frames" \
    --attention-right-frames "$local_frames"; mark_done exp/ft-local/.done; }
  mark_done exp/.done.ft
fi

# LANG=ARPA of each language's word n-gram (stage 9 trains them from --lm-text-dir; none with --ns-lm false)
ns_lm_specs() { [ "$ns_lm" = true ] && for l in $languages; do [ -f data/lm/$l.arpa ] && printf '%s ' "$l=data/lm/$l.arpa"; done; true; }
# continued training with the noisy student's noise (SpecAugment): EXP FROM N [ARGS]
noisy() { local exp=$1 from=$2 n=$3; shift 3
  continue_from "$exp" "$from" "$n" --spec-augment true --spec-aug-time-masks "$ns_time_masks" "$@"; }

if stage 9 "Noisy student: $ns_generations generation(s) on the untranscribed pool" exp/.done.ns; then
  [ -n "$pool_dir" ] || die "noisy student needs the untranscribed pool (--pool-dir)"
  require exp/$ns_teacher/.done
  if [ -n "$lm_text_dir" ] && [ "$ns_lm" = true ]; then
    for l in $languages; do
      if [ -f "$lm_text_dir/$l.txt" ] && [ ! -f data/lm/$l.arpa ]; then
        python -m icefall_ext.bin.train_lm --text "$lm_text_dir/$l.txt" --lowercase --order "$ns_lm_order" \
          --out data/lm/$l.arpa
      fi
    done
  fi
  lms=($(ns_lm_specs))
  # generation 0's teacher: --ns-teacher trained the student's way (noise, every weight) on labelled audio alone,
  # so that the students start from the best supervised model (Park et al. 2020's teacher), not from one the same
  # extra updates improve without any pseudo-label (see --ns-teacher-updates)
  if [ ! -f exp/ns-0/.done ]; then noisy exp/ns-0 exp/$ns_teacher "$ns_teacher_updates"; mark_done exp/ns-0/.done; fi
  teacher=exp/ns-0
  for g in $(seq 1 "$ns_generations"); do
    pl=data/pl/ns-$g
    if [ ! -f $pl/.done ]; then
      refs=(); for l in $languages; do [ -f "$pool_dir/$l/reference_transcripts.tsv" ] && refs+=("$pool_dir/$l/reference_transcripts.tsv"); done
      search=()
      if [ ${#lms[@]} -gt 0 ]; then
        mkdir -p $pl
        [ -f $pl/lm_tuning.json ] || python -m icefall_ext.bin.tune_lm --exp-dir $teacher --lang-dir $lang \
          --cuts $fbank/fleurs_cuts_dev.jsonl.gz --lm "${lms[@]}" --metric cer --beam "$ns_lm_beam" \
          --alphas "$ns_lm_alphas" --betas "$ns_lm_betas" --max-duration 200 --out $pl/lm_tuning.json
        search=(--method ctc-beam --beam "$ns_lm_beam" --lm "${lms[@]}" --tuned-lm $pl/lm_tuning.json)
      fi
      python -m icefall_ext.bin.pseudo_label --exp-dir $teacher --lang-dir $lang --cuts $(pool_cuts) --out-dir $pl \
        --max-duration 200 --rate-reference-cuts $(fleurs_cuts train) \
        --keep-fraction "$ns_keep_fraction" ${refs[@]+--reference-tsv "${refs[@]}"} ${search[@]+"${search[@]}"}
      mark_done $pl/.done
    fi
    if [ ! -f exp/ns-$g/.done ]; then
      noisy exp/ns-$g $teacher "$ns_updates" --mix-cuts $pl/pl_cuts.jsonl.gz --mix-ratio "$ns_pl_ratio"
      mark_done exp/ns-$g/.done
    fi
    teacher=exp/ns-$g
  done
  if [ ! -f exp/ns-labelled-only/.done ]; then  # the control: as many more updates as all students, no pseudo-label
    noisy exp/ns-labelled-only exp/ns-0 $((ns_updates * ns_generations))
    mark_done exp/ns-labelled-only/.done
  fi
  mark_done exp/.done.ns
fi

longform_cuts() { for l in $languages; do [ -f $fbank/longform-${l}_cuts_test.jsonl.gz ] && \
  printf '%s ' "$l=$fbank/longform-${l}_cuts_test.jsonl.gz"; done; true; }

if stage 10 "Evaluation: CER per language, language-ID accuracy, long-form WER" exp/.done.eval; then
  ns=$(for g in $(seq 1 "$ns_generations"); do printf 'ns-%s ' $g; done)
  for model in ctc-bestrq-$codebooks ctc-bestrq-1 ctc-scratch ft-full ft-adapters ft-head ft-local ns-0 $ns \
      ns-labelled-only; do
    [ -d exp/$model ] || continue
    python -m icefall_ext.bin.decode --exp-dir exp/$model --lang-dir $lang --threads "$threads" \
      --cuts dev=$fbank/fleurs_cuts_dev.jsonl.gz test=$fbank/fleurs_cuts_test.jsonl.gz --method ctc-greedy
  done
  lms=$(ns_lm_specs)
  if [ -n "$lms" ] && [ -f data/pl/ns-1/lm_tuning.json ]; then  # what the LM gives generation 0's teacher
    python -m icefall_ext.bin.decode --exp-dir exp/ns-0 --lang-dir $lang --threads "$threads" \
      --cuts dev=$fbank/fleurs_cuts_dev.jsonl.gz test=$fbank/fleurs_cuts_test.jsonl.gz --method ctc-beam \
      --beam "$ns_lm_beam" --lm $lms --tuned-lm data/pl/ns-1/lm_tuning.json
  fi
  for from in bestrq-$codebooks scratch; do
    python -m icefall_ext.bin.eval_lid --exp-dir exp/lid-$from --lang-dir $lang --threads "$threads" \
      --cuts test=$fbank/fleurs_cuts_test.jsonl.gz dev=$fbank/fleurs_cuts_dev.jsonl.gz
  done
  long=$(longform_cuts)
  if [ -n "$long" ]; then
    # whole recordings through the encoder (no segmentation), trained the same way: full attention, the same
    # weights with chunk-wise attention (training clips are shorter than a chunk, so training is identical), local
    # attention; and crop-and-stitch decoding of the full-attention model
    dec() { python -m icefall_ext.bin.decode --lang-dir $lang --threads "$threads" --method ctc-greedy \
      --max-duration 400 --metric wer --cuts $long "$@"; }
    dec --exp-dir exp/ft-full --tag=-long-full
    dec --exp-dir exp/ft-full --tag=-long-chunk --attention chunk --attention-chunk-seconds "$chunk_seconds"
    dec --exp-dir exp/ft-local --tag=-long-local
    dec --exp-dir exp/ft-full --tag=-long-crop --chunk-seconds "$crop_seconds"
  fi
  mark_done exp/.done.eval
fi

if stage 11 "Export to sherpa-onnx and decode the test set with it" exp/.done.export; then
  python -m icefall_ext.bin.export_onnx --exp-dir exp/ctc-bestrq-$codebooks --lang-dir $lang --type ctc \
    --out-dir exp/ctc-bestrq-$codebooks/onnx
  python -m icefall_ext.bin.sherpa_decode --onnx-dir exp/ctc-bestrq-$codebooks/onnx --type ctc \
    --cuts test=$fbank/fleurs_cuts_test.jsonl.gz --out-dir exp/ctc-bestrq-$codebooks/sherpa-decode
  first=${languages%% *}
  python -m icefall_ext.bin.export_onnx --exp-dir exp/ft-adapters --lang-dir $lang --type ctc \
    --adapter-language "$first" --out-dir exp/ft-adapters/onnx-$first
  python -m icefall_ext.bin.sherpa_decode --onnx-dir exp/ft-adapters/onnx-$first --type ctc \
    --cuts $first=$fbank/fleurs-${first}_cuts_test.jsonl.gz --out-dir exp/ft-adapters/sherpa-decode
  mark_done exp/.done.export
fi

if stage 12 "RESULTS.md" ""; then
  python "$root/local/report_fleurs.py" --exp exp --languages $languages --codebooks "$codebooks" \
    --ns-generations "$ns_generations" --ns-teacher "$ns_teacher" --chunk-seconds "$chunk_seconds" \
    --local-frames "$local_frames" --crop-seconds "$crop_seconds" --out RESULTS.md --command "egs/fleurs/run.sh --mini $mini"
fi

log "Done (stages $stage..$stop_stage)."
