#!/bin/bash
# Train the TTS recipe on token folders carried to a lent GPU machine (tokens are tiny: carry them), resuming
# RUN_DIR; then copy the log and the model (fp16, in 15 MB parts) to OUT_DIR. Rejoin with
# `cat OUT_DIR/tts-fp16.part* > model.safetensors`.
#
#   benchmarks/device/train_tts.sh MINUTES RUN_DIR TOKENS_DIR OUT_DIR [--set key=value ...]
set -u
minutes=$1 run=$2 tokens=$3 out=$4
shift 4
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p "$out"
nvidia-smi dmon -s u -d 10 > "$out/dmon.txt" 2>&1 &
dmon=$!
launch=(python3 -m audiocodec.train)
[ "${NGPU:-1}" -gt 1 ] && launch=(torchrun --standalone --nproc_per_node "$NGPU" -m audiocodec.train)
"${launch[@]}" recipes/tts/mini.yaml --run-dir "$run" --set task.train="$tokens/train" \
  --set task.valid="$tokens/valid" --set trainer.max_minutes="$minutes" --set trainer.progress=false "$@"
rc=$?
kill "$dmon"
cp "$run/train.log" "$out/"
python3 - "$run/tts" "$out/tts-fp16.safetensors" <<'PY'
import sys, torch
from audiocodec.tts import load_tts, save_tts
save_tts(load_tts(sys.argv[1]), sys.argv[2], dtype=torch.float16)
PY
split -b 15M -d "$out/tts-fp16.safetensors" "$out/tts-fp16.part" && rm "$out/tts-fp16.safetensors"
exit $rc
