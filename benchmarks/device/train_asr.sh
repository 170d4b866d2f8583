#!/bin/bash
# Train the offline CTC recogniser / speech teacher (recipes/asr/ctc_mini.yaml) on a lent GPU machine from a
# manifest folder carried there (DATA_DIR/{train,valid}.jsonl + audio, e.g. the mini `tts` corpus as 16 kHz
# Opus), then copy the log and the exported folders (save_pretrained layout; `best` by val/cer, `asr` the last)
# as tar files to OUT_DIR. Needs transformers on the machine (carry its wheels in .whl/ when it is missing).
#
#   benchmarks/device/train_asr.sh MINUTES RUN_DIR DATA_DIR OUT_DIR [--set key=value ...]
set -u
minutes=$1 run=$2 data=$3 out=$4
shift 4
source "$(dirname "$0")/setup.sh"
mkdir -p "$out"
"${launch[@]}" recipes/asr/ctc_mini.yaml --run-dir "$run" --set task.train="$data/train.jsonl" \
  --set task.valid="$data/valid.jsonl" --set trainer.max_minutes="$minutes" --set trainer.progress=false "$@"
rc=$?
cp "$run/train.log" "$out/asr-train.log"
for name in best asr; do
    [ -d "$run/$name" ] && tar cf "$out/$name.tar" -C "$run" "$name"
done
exit $rc
