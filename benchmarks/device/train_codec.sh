#!/bin/bash
# Train the small WavTokenizer-75 recipe on the mini corpus on a lent GPU machine, resuming RUN_DIR when it
# holds a checkpoint; then copy the log and the generator (fp16, in 15 MB parts: the device returns files of
# at most 16 MB) to OUT_DIR. Rejoin the parts with `cat OUT_DIR/model-fp16.part* > model.safetensors`.
#
#   benchmarks/device/train_codec.sh MINUTES RUN_DIR OUT_DIR [--set key=value ...]
#   NGPU=2 benchmarks/device/train_codec.sh ...        # data parallel on 2 GPUs (torchrun)
#   ... --init-from audiocodec/assets/wavtokenizer-75-small-mini.safetensors   # continue the shipped codec
#
# Needs .whl/ (soundfile and its deps for the image's python) and the mini corpus as FLAC in $DATA (default .data/mini_gpu).
set -u
minutes=$1 run=$2 out=$3
shift 3
source "$(dirname "$0")/setup.sh"
mkdir -p "$out"
nvidia-smi dmon -s u -d 10 > "$out/dmon.txt" 2>&1 &
dmon=$!
"${launch[@]}" recipes/codec/wavtokenizer_75_small.yaml --run-dir "$run" \
  --set task.data.train=${DATA:-.data/mini_gpu}/train.jsonl --set task.data.valid=${DATA:-.data/mini_gpu}/valid.jsonl \
  --set 'task.valid_metrics=[]' --set trainer.max_minutes="$minutes" --set trainer.progress=false "$@"
rc=$?
kill "$dmon"
cp "$run/train.log" "$out/"
python3 -m audiocodec convert "$run/codec" "$out/model-fp16.safetensors" --dtype float16 --overwrite &&
  split -b 15M -d "$out/model-fp16.safetensors" "$out/model-fp16.part" && rm "$out/model-fp16.safetensors"
exit $rc
