#!/usr/bin/env bash
# LJSpeech TTS recipe: one speaker, 13,100 clips, 24 h. Get LJSpeech-1.1 from https://keithito.com/LJ-Speech-Dataset/ and extract it.
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
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/tts or a YAML file (default ljspeech)
#   --codec M                  codec of the tokens (checkpoint or embedded name)
#   --data DIR --tokens DIR --exp DIR
#   --set KEY=VALUE            training config override, repeatable
#   --ngpu N  --seed N  --device DEV  --asr_model DIR
set -euo pipefail

root=
stage=0
stop_stage=3
config=ljspeech
codec=wavtokenizer-75-small-mini
data=data
tokens=tokens/ljspeech
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
train_manifest=$data/ljspeech.train.jsonl
valid_manifest=$data/ljspeech.valid.jsonl
test_manifest=$data/ljspeech.test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    if [ -z "$root" ] || [ ! -d "$root" ]; then
        echo "stage 0 needs the corpus: pass --root DIR (got '${root}')." >&2
        exit 2
    fi
    echo "stage 0: manifests of $root -> $data"
    audiocodec prepare ljspeech "$root" "$data/ljspeech.jsonl" --split utterance --valid 100 --test 100 --seed "$seed"
fi

. "$repo/egs/utils/tts_stages.sh"
