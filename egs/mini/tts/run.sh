#!/usr/bin/env bash
# TTS recipe on the offline mini corpus (espeak-ng voices reading generated sentences), ESPnet style.
#
#   ./run.sh                                       # every stage: large corpus, recipes/tts/mini.yaml
#   ./run.sh --scale toy --set trainer.max_steps=20 --set task.model.dim=64   # a quick smoke run
#
# Stages (each one command of the audiocodec package; paths are relative to this folder):
#   0  build the corpus into $data (egs/mini/local/make_corpus.py; installs espeak-ng when missing)
#   1  encode the train / valid manifests into codec tokens ($tokens/{train,valid}) with $codec
#   2  train recipes/tts/$config.yaml into $exp (run it again to resume; torchrun when --ngpu > 1);
#      the model is exported to $exp/tts at every checkpoint
#   3  speak the held-out test sentences in the held-out voices (cloned from another clip of each voice)
#      and score them against espeak-ng's own rendering: MCD-DTW, duration ratio -> $exp/eval/metrics.json
#
# Options:
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/tts (without .yaml) or a YAML file (default mini)
#   --scale toy|default|large|tts  mini corpus size (default: tts: 9,000 training sentences of 90 voices)
#   --codec M                  codec of the tokens (default: the embedded wavtokenizer-75-small-mini)
#   --data DIR --tokens DIR --exp DIR   corpus, token and run folders
#   --set KEY=VALUE            training config override, repeatable
#   --ngpu N                   GPUs for stages 1-2 (default 1)
#   --seed N                   corpus and training seed (default 0)
#   --device DEV               device of stages 1 and 3 (default auto)
#   --asr_model DIR            a local transformers ASR model: stage 3 adds WER / CER
set -euo pipefail

stage=0
stop_stage=3
config=mini
scale=tts
codec=wavtokenizer-75-small-mini
data=
tokens=
exp=
ngpu=1
seed=0
device=auto
asr_model=
sets=()

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
name=$(basename "$config" .yaml)
data=${data:-data/mini_${scale}}
tokens=${tokens:-tokens/mini_${scale}}
exp=${exp:-exp/tts_${name}_${scale}}
train_manifest=$data/train.jsonl
valid_manifest=$data/valid.jsonl
test_manifest=$data/test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    echo "stage 0: mini corpus ($scale) -> $data"
    python3 "$repo/egs/mini/local/make_corpus.py" "$data" --scale "$scale" --seed "$seed"
fi

. "$repo/egs/utils/tts_stages.sh"
