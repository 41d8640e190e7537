#!/usr/bin/env bash
# Multi-stage multi-modal pre-training for ASR (Jain et al. 2024, "Multi-Stage Multi-Modal Pre-Training for
# Automatic Speech Recognition"): an audio encoder pre-trained jointly with a video encoder on audio-visual speech
# (LRS3) by masked autoencoding (MAE), contrastive learning (CLR) or both, optionally mid-trained on speech
# translation (MuST-C en->X), then fine-tuned for LibriSpeech ASR with the audio encoder frozen.
#
# Usage: egs/lrs3/run.sh [--stage N] [--stop-stage M] [--mini true] [--option value ...]
#
# Stages:
#   0  corpora. --mini true synthesises all three with espeak-ng: LRS3 (mp4 clips in the real layout whose
#      synthetic face opens its mouth with the speech envelope), MuST-C en-{de,it,nl} (learnable translations from a
#      parallel grammar) and LibriSpeech. Real data: LRS3 cannot be downloaded by a script (licence: request access
#      at https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs3.html, unpack pretrain/ trainval/ test/ into
#      --lrs3-dir); MuST-C neither (https://ict.fbk.eu/must-c/, unpack en-<tgt>/ into --mustc-dir); LibriSpeech
#      is downloaded by lhotse
#   1  lhotse manifests: LRS3 (local/prepare_lrs3.py: audio extracted, video frames decoded by ffmpeg into uint8
#      arrays, --video-size, --crop), MuST-C (lhotse's prepare_must_c; text = English, translated_text = target),
#      LibriSpeech; bad items reported by id and skipped
#   2  fbank (the LRS3 cuts carry their video frames as cut.custom["video_frames"])
#   3  LibriSpeech token table (ASR: BPE, characters on the mini corpus); MuST-C target BPE per --mid-langs
#      language (translation)
#   4  audio-visual pre-training, one run per --pt-variants entry: mae, clr, mae+clr (the mean of the two losses)
#   5  mid-training: speech translation en->X (attention decoder + CTC on the translation's own tokens, no
#      transcript: translation only) from each encoder of stage 4 and from scratch; only the audio encoder goes on.
#      From a pre-trained encoder the new decoder first learns alone on it, frozen (--mid-head-first updates)
#   6  ASR fine-tuning on LibriSpeech (--ft-hours of --ft-sets) with the encoder frozen (a CTC head with --head-layers
#      transformer layers is trained) from every encoder: {none, stage-4 variants} x {no mid-training, --mid-langs}; and, as a reference,
#      the same model trained from scratch with its encoder free (ScaledAdam at --lr, not AdamW)
#   7  decode: LibriSpeech test sets (CTC greedy, CER and WER); MuST-C tst-COMMON BLEU of the mid-training models
#   8  RESULTS.md
#
# Main options (real-data default / --mini default):
#   --mini false            build and use the built-in mini corpora
#   --work-dir              where data/, exp/ and RESULTS.md go (default: this recipe's directory)
#   --lrs3-dir, --mustc-dir, --librispeech-dir   corpus roots (default under --corpus-dir: download/ or mini_corpus/)
#   --pt-variants "mae clr mae+clr" / "mae mae+clr"   (the paper's rows; CLR alone one option away in the mini)
#   --mid-langs "de it nl" / "it"                    MuST-C targets of the mid-training columns
#   --video-size 88 / 16, --crop mouth / mouth        video frames given to the video encoder
#   --preset conformer-medium / conformer-mini        audio encoder (paper: 16-layer Conformer)
#   --video-preset base / tiny                        video ViT (paper: 16x16x2 tubelets, 12 blocks, 768 d)
#   --pt-decoder "4 512 8" / "2 192 4"               layers, width, heads of the shared MAE decoder (paper: 4 x 512)
#   --video-norm clip / clip                          ViT pixel normalisation: clip (each clip standardised over its
#                                                     frames: only the motion stays) or fixed (one global mean / std)
#   --pt-updates, --mid-updates, --ft-updates         training lengths
#   --ft-sets "train-clean-100" / "train-clean-100"   LibriSpeech fine-tuning data (960 h: "train-960")
#   --ft-hours 0 / 0                                  labelled hours of stage 6: a seeded random subset of --ft-sets (0: all)
#   --mid-target-ctc 0.3                              weight of mid-training's CTC on the translation tokens
#   --mid-head-first 3000 / 100                      mid-training updates on the frozen pre-trained encoder first (0: none)
#   --ls-tokens bpe / char, --vocab-size 500 / 100  LibriSpeech output units (--vocab-size: BPE only)
#   --head-layers 2                                   trainable transformer layers of the CTC head on the frozen encoder
#   --layer-mix false                                 true: the head reads a learnt mix of all the encoder's layers (SUPERB)
#   --ft-lr 0.001 / 0.002                             AdamW learning rate of stage 6
#   --lr, --max-duration, --world-size, --dtype, --threads, --beam
# Relative paths given as options are taken from the directory run.sh is called from.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

stage=0
stop_stage=8
mini=false
work_dir=
seed=42
mini_scale=1.0
corpus_dir=
lrs3_dir=
mustc_dir=
librispeech_dir=
pt_variants=
mid_langs=
video_size=
crop=
preset=
video_preset=
pt_decoder=
video_norm=
pt_updates=
mid_updates=
ft_updates=
ft_sets=
ft_hours=
head_layers=2
# Mini, measured (dev-clean CER at update 400 of the frozen-encoder head, one run each, seed 42): with the layer mix
# none 40.4, none+it 41.2, MAE 40.3, MAE+it 40.0, MAE+CLR 44.4: every arm near the random encoder's (the learnt weights
# stay near the mean: input 16-27%, each block 8-19%), so the mix lifts the weak arms but shows no pre-training gain
layer_mix=false
mid_target_ctc=0.3
mid_head_first=
ft_lr=
vocab_size=
ls_tokens=
mid_vocab_size=
lr=0.045
max_duration=
beam=4
world_size=1
dtype=
threads=0
valid_every=
spec_augment=

. "$root/utils/parse_options.sh"
. "$root/utils/stage.sh"
abs_paths work_dir corpus_dir lrs3_dir mustc_dir librispeech_dir
mkdir -p "${work_dir:=$here}"
cd "$work_dir"

pick corpus_dir download mini_corpus
pick lrs3_dir "$corpus_dir/lrs3" "$corpus_dir/lrs3"
pick mustc_dir "$corpus_dir/mustc" "$corpus_dir/mustc"
pick librispeech_dir "$corpus_dir/LibriSpeech" "$corpus_dir/LibriSpeech"
pick pt_variants "mae clr mae+clr" "mae mae+clr"
pick mid_langs "de it nl" "it"
pick video_size 88 16   # mini: the 32 x 32 mouth box scaled to 16 x 16 (4 tubelet patches of 8 x 8 px per 2 frames)
# the mini face is 64 x 64 px; its mouth (whose opening and shape follow the speech) lies in the lower-centre box that
# --crop mouth keeps, as on real LRS3. The whole face (--crop none) also shows who speaks: in-batch CLR can then match
# clips by speaker, a shortcut that tells nothing about held-out speakers
pick crop mouth mouth
pick preset conformer-medium conformer-mini
pick video_preset base tiny
# MAE decoder. Mini, measured (test-clean CER of the frozen-encoder CTC head after 400 updates; random encoder: 46.1):
# a 1 x 64 decoder (the tiny video preset's) leaves the reconstruction to the encoder's top layers, whose frames then
# serve a head worse: 42.9 after 1200 MAE updates vs 40.9 with 2 x 192 (one run each, seed 42)
pick pt_decoder "4 512 8" "2 192 4"
# Mini, measured (CLR alone, 600 updates, held-out video->audio top-1 among 60 clips, chance 1.7%): fixed pixel
# normalisation with the linear CLR head 0.0% (embeddings grouped by speaker); per-clip standardisation with the
# batch-norm head (both now defaults) 6.7-10%. Fixed normalisation with the batch-norm head is not measured yet
pick video_norm clip clip
# Mini, measured as above (1 x 64 decoder): MAE for 300 updates 61.2 (worse than random), 900 45.3, 1200 42.9, 2400 40.0
pick pt_updates 100000 1200
pick mid_updates 30000 300
# Mid-training from a pre-trained encoder first trains the new decoder (and translation CTC layer) alone on the frozen
# encoder for this many of its updates, then everything (utils/stage.sh head_first). Mini, measured (MAE encoder, en->it;
# stage 6's frozen-encoder head, dev-clean CER at update 400; MAE alone 41.7): mid-trained all 300 updates at once,
# 60.1 (57.4 already after 129 of them; 60.7 at --lr 0.01), dev BLEU 24.5; head first for 100 then 200, 44.8, BLEU 24.7
pick mid_head_first 3000 100
[ "$mid_head_first" -lt "$mid_updates" ] || die "--mid-head-first ($mid_head_first) must be below --mid-updates ($mid_updates)"
pick ft_updates 30000 400   # mini: the from-scratch reference needs ~400 updates to learn (egs/librispeech)
# AdamW. Mini, measured on BPE-100: with ScaledAdam at 0.045 the frozen random encoder's head reached dev CER 72.9%,
# with 0.002 64.3%; at 0.005 it stayed at the blank-only output
pick ft_lr 0.001 0.002
pick ft_sets "train-clean-100" "train-clean-100"
# Labelled hours of stage 6 (train --train-hours: a seeded random subset, the same for every arm; 0: all). The paper
# has about 4 h of pre-training audio per labelled hour (LRS3 433 h : train-clean-100); the mini 0.96 h : 0.78 h.
# Mini, measured with that ratio, before this option existed: stage 6's train command (all its options as above)
# with --train-cuts a hand-drawn 200 of the train-clean-100 cuts (0.18 h): CutSet.from_file(...).to_eager()
# .shuffle(rng=random.Random(0)).subset(first=200); dev-clean CER at update 400, seed 42 (last valid.jsonl line):
# random encoder 46.1, MAE 45.5, MAE+CLR 48.7, the from-scratch reference 41.4; with a linear head (--head-layers 0)
# at update 300: random 64.9, MAE 60.1. Less labelled data does not bring out the pre-training: the MAE encoder
# mostly starts faster (update 100: 49.9 vs 80.9; linear 64.2 vs 93.6), so the mini keeps all 0.78 h
pick ft_hours 0 0
pick vocab_size 500 100   # as egs/librispeech: the mini corpus has 850 transcripts
# LibriSpeech output units of stage 6. Mini: characters; on BPE-100 every arm, the from-scratch reference with its
# encoder free included, stayed at the blank-only output for 400 updates (measured: dev CER 98.6%; 32.9% on characters)
pick ls_tokens bpe char
pick mid_vocab_size 8000 200
pick max_duration 600 60
pick dtype bfloat16 float32
pick valid_every 2000 100
pick spec_augment true false  # mini: a few hundred updates (as the other mini recipes)

fbank=data/fbank
if [ "$ls_tokens" = char ]; then lang=data/lang_char; else lang=data/lang_bpe_$vocab_size; fi
ls_cuts() { for p in "$@"; do printf '%s ' "$fbank/librispeech_cuts_$p.jsonl.gz"; done; }
mustc_cuts() { printf '%s' "$fbank/must_c_cuts_en-$1_$2.jsonl.gz"; }
av_json() {  # MAE decoder layers, width, heads; the ViT's pixel normalisation
  printf '{"decoder_layers": %d, "decoder_dim": %d, "decoder_heads": %d, "video": {"pixel_norm": "%s"}}' "$@"; }
common=(--seed "$seed" --world-size "$world_size" --dtype "$dtype" --threads "$threads" --optimizer scaled_adam
        --scheduler eden --lr "$lr" --num-epochs 0 --max-duration "$max_duration" --valid-every-n "$valid_every"
        --spec-augment "$spec_augment")

if stage 0 "Corpora" "$corpus_dir/.done"; then
  if [ "$mini" = true ]; then
    for layout in lrs3 mustc librispeech; do
      python "$root/local/make_mini_corpus.py" --layout $layout --out "$corpus_dir" --seed "$seed" \
        --scale "$mini_scale" --num-jobs 2
    done
  else
    [ -d "$lrs3_dir/test" ] || die "no LRS3 at $lrs3_dir: it cannot be downloaded by a script; request access at
https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs3.html, unpack pretrain/ trainval/ test/ there (or pass --lrs3-dir)"
    for l in $mid_langs; do
      [ -d "$mustc_dir/en-$l/data" ] || die "no MuST-C en-$l at $mustc_dir/en-$l: download it by hand from
https://ict.fbk.eu/must-c/ (or pass --mustc-dir)"
    done
    [ -d "$librispeech_dir" ] || lhotse download librispeech --full "$(dirname "$librispeech_dir")"
  fi
  mark_done "$corpus_dir/.done"
fi

if stage 1 "Manifests" data/manifests/.done; then
  require "$lrs3_dir" "$mustc_dir" "$librispeech_dir"
  python "$root/local/prepare_lrs3.py" --corpus-dir "$lrs3_dir" --output-dir data/manifests \
    --video-size "$video_size" --crop "$crop" --num-jobs 2
  prepare="python -m icefall_ext.bin.prepare_corpus --output-dir data/manifests -j 2"
  $prepare must-c --corpus-dir "$mustc_dir" -l $mid_langs
  $prepare librispeech --corpus-dir "$librispeech_dir"
  mark_done data/manifests/.done
fi

if stage 2 "Fbank features" $fbank/.done; then
  for glob in lrs3 must_c librispeech; do
    python -m icefall_ext.bin.compute_fbank --manifest-dir data/manifests --glob $glob --out-dir $fbank --num-jobs 2
  done
  lhotse combine $fbank/lrs3_cuts_pretrain.jsonl.gz $fbank/lrs3_cuts_trainval.jsonl.gz $fbank/lrs3_cuts_train.jsonl.gz
  mark_done $fbank/.done
fi

if stage 3 "LibriSpeech $ls_tokens table; MuST-C target BPE ($mid_vocab_size)" data/.done.lang; then
  python -m icefall_ext.bin.prepare_lang --cuts $(ls_cuts $ft_sets) --token-type "$ls_tokens" --vocab-size "$vocab_size" \
    --lang-dir $lang
  for l in $mid_langs; do
    python -m icefall_ext.bin.prepare_lang --cuts "$(mustc_cuts $l train)" --token-type bpe \
      --vocab-size "$mid_vocab_size" --text translation --lang-dir data/lang_bpe_${mid_vocab_size}_$l
  done
  mark_done data/.done.lang
fi

if stage 4 "Audio-visual pre-training: $pt_variants" exp/.done.pt; then
  for v in $pt_variants; do
    [ -f exp/pt-$v/.done ] && continue
    python -m icefall_ext.bin.train --pretrain av --av-objective "$v" --exp-dir exp/pt-$v --preset "$preset" \
      --video-preset "$video_preset" --av-overrides "$(av_json $pt_decoder "$video_norm")" \
      --train-cuts $fbank/lrs3_cuts_train.jsonl.gz \
      --valid-cuts $fbank/lrs3_cuts_test.jsonl.gz --max-updates "$pt_updates" \
      --warmup-updates $((pt_updates / 10)) "${common[@]}" --spec-augment false  # MAE masks its own input
    mark_done exp/pt-$v/.done
  done
  mark_done exp/.done.pt
fi

init_of() { [ "$1" = none ] || printf -- '--init-from exp/pt-%s' "$1"; }

# one mid-training run (stage 5): mid_train EXP_DIR INIT_FROM|none ARG...
mid_train() { local exp=$1 from=$2; shift 2
  [ "$from" = none ] || set -- --init-from "$from" "$@"
  python -m icefall_ext.bin.train --task st --exp-dir "$exp" --preset "$preset" --ctc-scale 0 \
    --target-ctc-scale "$mid_target_ctc" "${common[@]}" "$@"; }

if stage 5 "Mid-training: speech translation en->{$mid_langs} from each encoder" exp/.done.mid; then
  for v in none $pt_variants; do
    for l in $mid_langs; do
      [ -f exp/mid-$v-$l/.done ] && continue
      data=(--lang-dir data/lang_bpe_${mid_vocab_size}_$l --train-cuts "$(mustc_cuts $l train)"
            --valid-cuts "$(mustc_cuts $l dev)")
      from=none; [ "$v" = none ] || from=exp/pt-$v
      if [ "$from" = none ] || [ "$mid_head_first" -le 0 ]; then
        mid_train exp/mid-$v-$l "$from" --max-updates "$mid_updates" --warmup-updates $((mid_updates / 10)) "${data[@]}"
      else  # the new decoder and CTC layer first learn on the frozen pre-trained encoder (exp/mid-$v-$l/head)
        head_first exp/mid-$v-$l "$from" "$mid_updates" "$mid_head_first" mid_train "${data[@]}"
      fi
      mark_done exp/mid-$v-$l/.done
    done
  done
  mark_done exp/.done.mid
fi

if stage 6 "Frozen-encoder ASR fine-tuning on LibriSpeech ($ft_sets)" exp/.done.ft; then
  ft() { local exp=$1; shift
    [ -f $exp/.done ] && return 0
    python -m icefall_ext.bin.train --exp-dir $exp --preset "$preset" --lang-dir $lang --heads ctc \
      --train-cuts $(ls_cuts $ft_sets) --valid-cuts $(ls_cuts dev-clean) --max-updates "$ft_updates" \
      --train-hours "$ft_hours" --warmup-updates $((ft_updates / 10)) "${common[@]}" --optimizer adamw --lr "$ft_lr" "$@"
    mark_done $exp/.done; }
  case $layer_mix in true|false) ;; *) die "--layer-mix must be true or false, got '$layer_mix'";; esac
  head=(--model-overrides "{\"ctc_head_layers\": $head_layers, \"layer_mix\": $layer_mix}")
  for v in none $pt_variants; do
    for m in none $mid_langs; do
      if [ "$m" = none ]; then from=$(init_of $v); else from="--init-from exp/mid-$v-$m"; fi
      ft exp/asr-$v-$m --freeze-encoder true $from "${head[@]}"
    done
  done
  # the reference trains its encoder too: ScaledAdam + Eden at --lr as every from-scratch model here (measured on the
  # mini corpus: AdamW at --ft-lr left it at the blank-only output, dev CER 99.5% at update 300; this: 32.9% at 400)
  ft exp/asr-scratch "${head[@]}" --optimizer scaled_adam --lr "$lr"
  mark_done exp/.done.ft
fi

if stage 7 "Decode: LibriSpeech test sets (CTC greedy); MuST-C tst-COMMON (beam $beam)" exp/.done.decode; then
  for exp in exp/asr-*; do
    python -m icefall_ext.bin.decode --exp-dir $exp --lang-dir $lang --threads "$threads" --avg 1 \
      --method ctc-greedy --cuts test-clean=$(ls_cuts test-clean) test-other=$(ls_cuts test-other)
  done
  for v in none $pt_variants; do
    for l in $mid_langs; do
      python -m icefall_ext.bin.decode --task st --exp-dir exp/mid-$v-$l --lang-dir data/lang_bpe_${mid_vocab_size}_$l \
        --method st-beam --beam "$beam" --threads "$threads" --avg 1 --cuts tst-COMMON="$(mustc_cuts $l tst-COMMON)"
    done
  done
  mark_done exp/.done.decode
fi

if stage 8 "RESULTS.md" ""; then
  python "$root/local/report_lrs3.py" --exp exp --pt-variants $pt_variants --mid-langs $mid_langs --out RESULTS.md \
    --command "egs/lrs3/run.sh --mini $mini"
fi

log "Done (stages $stage..$stop_stage)."
