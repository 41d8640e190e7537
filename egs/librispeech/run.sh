#!/usr/bin/env bash
# LibriSpeech: Zipformer (or Conformer) pruned-RNN-T transducer + CTC, decoding, sherpa-onnx export (offline and
# streaming), and transfer of the multilingual CTC model of egs/commonvoice_voxpopuli (Lugosch et al. 2022, Table 4).
#
# Usage: egs/librispeech/run.sh [--stage N] [--stop-stage M] [--mini true] [--config conf/FILE] [--option value ...]
#
# Stages:
#   0  corpus: --mini true synthesises the LibriSpeech layout with espeak-ng; real data: lhotse downloads
#      LibriSpeech (and MUSAN when --musan true)
#   1  lhotse manifests (LibriSpeech; MUSAN)
#   2  fbank (kaldi-native-fbank), train parts with 0.9/1.1 speed perturbation when --speed-perturb true;
#      MUSAN cut into 10 s windows for noise mixing
#   3  BPE token table (sentencepiece, --vocab-size 500)
#   4  offline model: transducer (pruned RNN-T) + CTC
#   5  decode dev/test clean/other: greedy, modified beam search, CTC greedy (--epoch/--avg averaging)
#   6  streaming model: chunk-causal encoder trained with random chunk sizes and left contexts
#   7  streaming decode in PyTorch, chunk by chunk with encoder states (as sherpa-onnx's online recognizer)
#   8  export both models to sherpa-onnx (offline transducer, streaming transducer) and decode with sherpa-onnx
#   9  transfer (Table 4): the multilingual CTC model with its output layer replaced, fine-tuned on each of
#      --transfer-sets, next to the same model trained from scratch for the same number of updates
#  10  RESULTS.md
#
# Main options (real-data default / --mini default):
#   --mini false             use the built-in mini corpus (synthesised by stage 0)
#   --work-dir               where data/, exp/ and RESULTS.md go (default: this recipe's directory)
#   --corpus-dir             holds LibriSpeech/ (and musan/)    (download / mini_corpus)
#   --encoder zipformer      zipformer or conformer (preset <encoder>-<size>)
#   --size medium / mini     model size (medium: ~65M parameters)
#   --train-sets             "train-clean-100 train-clean-360 train-other-500" / "train-clean-100"
#   --speed-perturb true / false, --musan true / false, --vocab-size 500 / 100 (BPE)
#   --max-duration 1000 / 40, --world-size 1, --dtype bfloat16 / float32, --lr 0.045
#   --num-epochs 30 / 0, --max-updates 0 / 400 (0: no limit), --avg 9 / 2 (epoch checkpoints averaged in decoding)
#   --eden-lr-batches 7500 / 5000, --eden-lr-epochs 3.5 / 6, --warm-step 2000 / 150 (simple -> pruned loss),
#   --ref-duration 600 / 40 (Zipformer schedules), --ctc-scale 0.2 / 1.0   (real values: icefall's zipformer recipe)
#   --chunk-sizes 16,32,64,-1 --left-context 64,128,256,-1   (streaming training, 50 Hz frames; -1 = full)
#   --decode-chunk-len 32    feature frames per streaming step (= 2 x the first chunk size)
#   --streaming-sets         sets decoded by the streaming model (mini: test-clean test-other)
#   --streaming-from-offline false / true   start the streaming model from the offline one (--streaming-updates 150)
#   --multilingual-exp       egs/commonvoice_voxpopuli/exp/base (a trained multilingual CTC model)
#   --transfer-sets          "train-clean-100 train-960" / "train-clean-100", --transfer-updates 60000 / 500
# Real-size settings for GPUs: --config conf/zipformer_medium_4gpu.conf (see conf/).
# Relative paths given as options (--config, --work-dir, --corpus-dir, --multilingual-exp) are taken from the directory
# run.sh is called from; the default corpus dir (download/, mini_corpus/) is under the work dir.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

stage=0
stop_stage=10
mini=false
work_dir=
seed=42
mini_scale=1.0
corpus_dir=
encoder=zipformer
size=
train_sets=
speed_perturb=
musan=
vocab_size=
max_duration=
world_size=1
dtype=
threads=0
lr=0.045
num_epochs=
max_updates=
warmup_updates=
eden_lr_batches=
eden_lr_epochs=
warm_step=
ref_duration=
ctc_scale=
save_every_n=
avg=
valid_every=
spec_augment=
chunk_sizes=16,32,64,-1
left_context=64,128,256,-1
decode_chunk_len=32
streaming=true
streaming_from_offline=
streaming_updates=
streaming_sets=
beam=4
multilingual_exp=
transfer_sets=
transfer_updates=
transfer_lr=

. "$root/utils/parse_options.sh"
. "$root/utils/stage.sh"
abs_paths work_dir corpus_dir multilingual_exp  # relative to where run.sh is called from, before the cd
mkdir -p "${work_dir:=$here}"
cd "$work_dir"

pick corpus_dir download mini_corpus
pick size medium mini
pick train_sets "train-clean-100 train-clean-360 train-other-500" "train-clean-100"
pick speed_perturb true false
pick musan true false
pick vocab_size 500 100   # the mini corpus has 850 transcripts: 500 pieces would be mostly whole words
pick max_duration 1000 40
pick dtype bfloat16 float32
pick num_epochs 30 0
pick max_updates 0 400
pick warmup_updates 500 150   # Eden's warm-up (icefall: 500 batches)
pick eden_lr_batches 7500 5000  # icefall zipformer: Eden lr_batches 7500, lr_epochs 3.5
pick eden_lr_epochs 3.5 6
pick warm_step 2000 150       # simple -> pruned loss warm-up (icefall: 2000 updates)
pick ref_duration 600 40      # Zipformer schedules: update * max_duration * world_size / 600 (mini: one per batch)
pick ctc_scale 0.2 1.0        # CTC weight joint with the transducer (icefall: 0.2; mini: the CTC row needs a CTC head)
pick save_every_n 4000 250
pick avg 9 2
pick valid_every 3000 250
pick spec_augment true false  # too few mini updates to learn through SpecAugment
pick multilingual_exp "$root/egs/commonvoice_voxpopuli/exp/base" "$root/egs/commonvoice_voxpopuli/exp/base"
pick transfer_sets "train-clean-100 train-960" "train-clean-100"
pick transfer_updates 60000 500   # both rows: a from-scratch model needs ~400 mini updates to learn
pick transfer_lr 0.0045 0.01
pick streaming_from_offline false true
pick streaming_updates 0 150
pick streaming_sets "dev-clean dev-other test-clean test-other" "test-clean test-other"  # utterance by utterance: slow on CPU

fbank=data/fbank
lang=data/lang_bpe_$vocab_size
preset=$encoder-$size
sets="dev-clean dev-other test-clean test-other"
cuts_of() { for p in "$@"; do printf '%s ' "$fbank/librispeech_cuts_$p.jsonl.gz"; done; }
test_sets() { for p in ${1:-$sets}; do printf '%s=%s ' "$p" "$fbank/librispeech_cuts_$p.jsonl.gz"; done; }
noise_flags() { [ "$musan" = true ] && printf -- '--noise-cuts %s ' $fbank/musan_cuts_*.jsonl.gz; true; }
# 50 Hz chunk sizes of a conformer are in its 25 Hz output frames; the zipformer takes them at 50 Hz
streaming_overrides() {
  if [ "$encoder" = zipformer ]; then
    echo "{\"encoder_kwargs\": {\"causal\": true, \"chunk_size\": [$chunk_sizes], \"left_context_frames\": [$left_context]}}"
  else
    echo "{\"encoder_kwargs\": {\"causal\": true, \"chunk_size\": $((decode_chunk_len / 4)), \"left_context\": $(( ${left_context%%,*} / 2 ))}}"
  fi
}
train() { python -m icefall_ext.bin.train --seed "$seed" --world-size "$world_size" --dtype "$dtype" \
  --threads "$threads" --max-duration "$max_duration" --valid-every-n "$valid_every" --optimizer scaled_adam \
  --spec-augment "$spec_augment" --lang-dir "$lang" --valid-cuts "$fbank/librispeech_cuts_dev-clean.jsonl.gz" "$@"; }
decode() { python -m icefall_ext.bin.decode --threads "$threads" --lang-dir "$lang" --avg "$avg" "$@"; }
transducer() { train --preset "$preset" --heads hybrid --train-cuts $(cuts_of $train_sets) $(noise_flags) \
  --lr "$lr" --num-epochs "$num_epochs" --max-updates "$max_updates" --scheduler eden \
  --warmup-updates "$warmup_updates" --eden-lr-batches "$eden_lr_batches" --eden-lr-epochs "$eden_lr_epochs" \
  --warm-step "$warm_step" --ref-duration "$ref_duration" --ctc-scale "$ctc_scale" --save-every-n "$save_every_n" "$@"; }

if stage 0 "Corpus" "$corpus_dir/.done"; then
  if [ "$mini" = true ]; then
    python "$root/local/make_mini_corpus.py" --layout librispeech --out "$corpus_dir" --seed "$seed" \
      --scale "$mini_scale" --num-jobs 2
  else
    lhotse download librispeech --full "$corpus_dir"
    [ "$musan" = true ] && lhotse download musan "$corpus_dir"
  fi
  mark_done "$corpus_dir/.done"
fi

if stage 1 "Manifests" data/manifests/.done; then
  require "$corpus_dir/LibriSpeech"
  # lhotse's recipes; missing / unreadable audio and empty transcripts are reported by id and skipped
  prepare="python -m icefall_ext.bin.prepare_corpus --output-dir data/manifests -j 2"
  $prepare librispeech --corpus-dir "$corpus_dir/LibriSpeech"
  if [ "$musan" = true ]; then
    require "$corpus_dir/musan"
    $prepare musan --corpus-dir "$corpus_dir/musan"
  fi
  mark_done data/manifests/.done
fi

if stage 2 "Fbank features" $fbank/.done; then
  python -m icefall_ext.bin.compute_fbank --manifest-dir data/manifests --glob librispeech --out-dir $fbank \
    --num-jobs 2 --speed-perturb "$speed_perturb"
  if [ "$musan" = true ]; then
    python -m icefall_ext.bin.compute_fbank --manifest-dir data/manifests --glob musan --out-dir $fbank \
      --num-jobs 2 --window-seconds 10
  fi
  if [[ " $transfer_sets " == *" train-960 "* ]]; then
    lhotse combine $(cuts_of train-clean-100 train-clean-360 train-other-500) $fbank/librispeech_cuts_train-960.jsonl.gz
  fi
  mark_done $fbank/.done
fi

if stage 3 "BPE tokens ($vocab_size)" $lang/.done; then
  python -m icefall_ext.bin.prepare_lang --cuts $(cuts_of $train_sets) --token-type bpe \
    --vocab-size "$vocab_size" --lang-dir $lang
  mark_done $lang/.done
fi

if stage 4 "Offline $preset transducer + CTC" exp/$encoder/.done; then
  transducer --exp-dir exp/$encoder
  mark_done exp/$encoder/.done
fi

if stage 5 "Decode: greedy, modified beam search, CTC" exp/$encoder/.done.decode; then
  decode --exp-dir exp/$encoder --cuts $(test_sets) --method greedy modified-beam ctc-greedy --beam "$beam"
  mark_done exp/$encoder/.done.decode
fi

if [ "$streaming" = true ] && stage 6 "Streaming $preset transducer + CTC (random chunks)" exp/$encoder-streaming/.done; then
  if [ "$streaming_from_offline" = true ]; then  # mini: make the offline model chunk-causal and fine-tune it
    transducer --exp-dir exp/$encoder-streaming --model-overrides "$(streaming_overrides)" --init-from exp/$encoder \
      --max-updates "$streaming_updates" --lr "$transfer_lr" --scheduler constant --warmup-updates 1
  else
    transducer --exp-dir exp/$encoder-streaming --model-overrides "$(streaming_overrides)"
  fi
  mark_done exp/$encoder-streaming/.done
fi

if [ "$streaming" = true ] && stage 7 "Streaming decode in PyTorch (chunk by chunk)" exp/$encoder-streaming/.done.decode; then
  decode --exp-dir exp/$encoder-streaming --cuts $(test_sets "$streaming_sets") --method streaming-greedy greedy \
    --decode-chunk-len "$decode_chunk_len"
  mark_done exp/$encoder-streaming/.done.decode
fi

if stage 8 "Export to sherpa-onnx and decode with it" exp/.done.export; then
  python -m icefall_ext.bin.export_onnx --exp-dir exp/$encoder --lang-dir $lang --avg "$avg" --type transducer \
    --out-dir exp/$encoder/onnx
  python -m icefall_ext.bin.sherpa_decode --onnx-dir exp/$encoder/onnx --cuts $(test_sets) \
    --out-dir exp/$encoder/sherpa-decode
  if [ "$streaming" = true ]; then
    python -m icefall_ext.bin.export_onnx --exp-dir exp/$encoder-streaming --lang-dir $lang --avg "$avg" \
      --type streaming-transducer --decode-chunk-len "$decode_chunk_len" --out-dir exp/$encoder-streaming/onnx
    python -m icefall_ext.bin.sherpa_decode --onnx-dir exp/$encoder-streaming/onnx --cuts $(test_sets "$streaming_sets") \
      --out-dir exp/$encoder-streaming/sherpa-decode
  fi
  mark_done exp/.done.export
fi

if stage 9 "Transfer of the multilingual CTC model (Table 4)" exp/.done.transfer; then
  [ -d "$multilingual_exp" ] || die "no multilingual model at $multilingual_exp: run
  egs/commonvoice_voxpopuli/run.sh --mini $mini --stop-stage 4 first, or pass --multilingual-exp DIR"
  # the scratch twin has the multilingual model's architecture: only the initialisation (and its rate) differs
  for set in $transfer_sets; do
    for init in multilingual scratch; do
      exp=exp/transfer-$init-$set
      [ -f $exp/.done ] && continue
      if [ $init = multilingual ]; then
        how="--init-from $multilingual_exp --lr $transfer_lr --scheduler constant --warmup-updates 1"
      else
        # from scratch: the peak rate and an Eden warm-up of 1/12 of the run, as the multilingual base had
        how="--architecture-from $multilingual_exp --lr $lr --scheduler eden --warmup-updates $((transfer_updates / 12 + 1))"
      fi
      train --exp-dir $exp $how --train-cuts $(cuts_of $set) --num-epochs 0 --max-updates "$transfer_updates"
      decode --exp-dir $exp --cuts $(test_sets) --method ctc-greedy --avg 1
      mark_done $exp/.done
    done
  done
  mark_done exp/.done.transfer
fi

if stage 10 "RESULTS.md" ""; then
  python "$root/local/report_librispeech.py" --exp exp --encoder "$encoder" --transfer-sets $transfer_sets \
    --out RESULTS.md --command "egs/librispeech/run.sh --mini $mini"
fi

log "Done (stages $stage..$stop_stage)."
