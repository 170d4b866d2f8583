#!/usr/bin/env bash
# Codec recipe on the offline mini corpus (espeak-ng speech + fluidsynth music, 24 kHz mono), ESPnet style.
#
#   ./run.sh                                          # every stage: default corpus, wavtokenizer_75_small
#   ./run.sh --stage 1 --stop_stage 1 --config encodec_24k --ngpu 8
#   ./run.sh --scale toy --set trainer.max_steps=20   # a quick smoke run
#
# Stages (each one command of the audiocodec package; run from any folder, paths are relative to this one):
#   0  build the corpus into $data (egs/mini/local/make_corpus.py; installs espeak-ng, fluidsynth and the
#      GM soundfont from Debian when they are missing)
#   1  train recipes/codec/$config.yaml into $exp (run it again to resume; torchrun when --ngpu > 1);
#      the codec is exported to $exp/codec at every checkpoint
#   2  reconstruct the held-out test set with $exp/codec into $exp/decode/test/
#   3  score the test set (PESQ, STOI, SI-SDR, mel / STFT distance, V/UV F1, codebook use, bitrate)
#      into $exp/decode/metrics.json
#
# Options:
#   --stage N --stop_stage M   stages to run (default 0 .. 3)
#   --config NAME|FILE         a recipe of recipes/codec (without .yaml) or a YAML file (default wavtokenizer_75_small)
#   --scale toy|default|large  mini corpus size (default: default)
#   --data DIR                 corpus folder (default: data/mini_<scale>)
#   --exp DIR                  run folder (default: exp/<config>_<scale>)
#   --set KEY=VALUE            training config override, repeatable (e.g. --set trainer.batch_size=8)
#   --ngpu N                   GPUs for training (default 1)
#   --seed N                   corpus and training seed (default 0)
#   --device DEV               device of stages 2-3 (default auto)
#   --metrics LIST             metrics of stage 3, comma-separated (default: audiocodec eval's)
set -euo pipefail

stage=0
stop_stage=3
config=wavtokenizer_75_small
scale=default
data=
exp=
ngpu=1
seed=0
device=auto
metrics=
sets=()

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
name=$(basename "$config" .yaml)
data=${data:-data/mini_${scale}}
exp=${exp:-exp/${name}_${scale}}
train_manifest=$data/train.jsonl
valid_manifest=$data/valid.jsonl
test_manifest=$data/test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    echo "stage 0: mini corpus ($scale) -> $data"
    python3 "$repo/egs/mini/local/make_corpus.py" "$data" --scale "$scale" --seed "$seed"
fi

. "$repo/egs/utils/codec_stages.sh"
