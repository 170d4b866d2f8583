#!/usr/bin/env bash
# LibriTTS TTS recipe: 2,456 speakers, 585 h. Get LibriTTS from https://www.openslr.org/60/ and extract the subsets you want.
#
#   ./run.sh --root /data/CORPUS                  # every stage
#   ./run.sh --stage 2 --stop_stage 2 --ngpu 8    # train only
#
# Stages (each one command of the audiocodec package; paths are relative to this folder):
#   0  write jsonl manifests of the local corpus at --root into $data (nothing is downloaded)
#   1  encode the train / valid manifests into codec tokens with $codec
#   2  train recipes/tts/$config.yaml into $exp (resumes; torchrun when --ngpu > 1)
#   3  synthesise the test sentences and score them (MCD-DTW, duration ratio; WER / CER with --asr_model)
#
# Options:
#   --root DIR                 the extracted corpus (needed by stage 0)
#   --corpus libritts|libritts_r  --train_subsets "A B"  --valid_subsets A  --test_subsets A
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/tts or a YAML file (default libritts)
#   --codec M                  codec of the tokens (checkpoint or embedded name)
#   --data DIR --tokens DIR --exp DIR
#   --set KEY=VALUE            training config override, repeatable
#   --ngpu N  --seed N  --device DEV  --asr_model DIR
set -euo pipefail

root=
corpus=libritts
train_subsets="train-clean-100 train-clean-360"
valid_subsets=dev-clean
test_subsets=test-clean
stage=0
stop_stage=3
config=libritts
codec=wavtokenizer-75-small-mini
data=data
tokens=tokens/libritts
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
exp=${exp:-exp/tts_$(basename "$config" .yaml)}
train_manifest=$data/train.jsonl
valid_manifest=$data/valid.jsonl
test_manifest=$data/test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    if [ -z "$root" ] || [ ! -d "$root" ]; then
        echo "stage 0 needs the corpus: pass --root DIR (got '${root}')." >&2
        exit 2
    fi
    echo "stage 0: manifests of $root -> $data"
    audiocodec prepare "$corpus" "$root" "$train_manifest" --subsets $train_subsets
    audiocodec prepare "$corpus" "$root" "$valid_manifest" --subsets $valid_subsets
    audiocodec prepare "$corpus" "$root" "$test_manifest" --subsets $test_subsets
fi

. "$repo/egs/utils/tts_stages.sh"
