#!/usr/bin/env bash
# Semantic codec recipe (SpeechTokenizer / DM-Codec) on the offline mini corpus: its espeak-ng speech clips
# (transcripts known), 24 kHz, read at the codec's 16 kHz.
#
#   ./run.sh --speech_teacher models/hubert-base-ls960 --text_teacher models/bert-base-uncased   # DM-Codec
#   ./run.sh --config speechtokenizer_16k --speech_teacher models/hubert-base-ls960               # HuBERT only
#   ./run.sh --scale toy --speech_teacher_config '{"hidden_size": 16, ...}' \
#            --text_teacher_config '{"hidden_size": 16, ...}' --set trainer.max_steps=20          # a smoke run
#
# Stages (each one command of the audiocodec package; run from any folder, paths are relative to this one):
#   0  build the corpus into $data (egs/mini/local/make_corpus.py) and keep its transcribed (speech) clips:
#      $data/speech/{train,valid,test}.jsonl
#   1  teacher features of the train and valid clips into $feats/<teacher> (python -m audiocodec.semantic
#      features), for each teacher the config distils from (speech: HuBERT / wav2vec2, text: BERT); run it
#      again to resume
#   2  train recipes/codec/$config.yaml into $exp with those features (run it again to resume; torchrun when
#      --ngpu > 1); the codec is exported to $exp/codec at every checkpoint
#   3  reconstruct the held-out test clips with $exp/codec into $exp/decode/test/ and score them
#      (PESQ, STOI, SI-SDR, mel / STFT distance, V/UV F1, codebook use, bitrate) into $exp/decode/metrics.json
#
# Options:
#   --stage N --stop_stage M        stages to run (default 0 .. 3)
#   --config NAME|FILE              a recipe of recipes/codec (without .yaml) or a YAML file
#                                   (default speechtokenizer_dm_codec: speech + text teachers)
#   --scale toy|default|large       mini corpus size (default: default)
#   --data DIR                      corpus folder (default: data/mini_<scale>)
#   --feats DIR                     teacher feature folder (default: feats/mini_<scale>)
#   --exp DIR                       run folder (default: exp/<config>_<scale>)
#   --speech_teacher DIR            a local HuBERT / wav2vec2 / WavLM folder (save_pretrained layout)
#   --text_teacher DIR              a local BERT folder (model + tokenizer)
#   --speech_teacher_config JSON    instead: a random speech teacher (transformers HubertConfig arguments)
#   --text_teacher_config JSON      instead: a random text teacher (BertConfig arguments; character vocabulary)
#   --speech_layer L --text_layer L teacher hidden states: avg (default), an index, or indices "3,4,5"
#   --nj N                          feature processes per teacher (default 1)
#   --set KEY=VALUE                 training config override, repeatable (e.g. --set trainer.batch_size=8)
#   --ngpu N                        GPUs for training (default 1)
#   --seed N                        corpus, teacher and training seed (default 0)
#   --device DEV                    device of stages 1 and 3 (default auto)
#   --metrics LIST                  metrics of stage 3, comma-separated (default: audiocodec eval's)
set -euo pipefail

stage=0
stop_stage=3
config=speechtokenizer_dm_codec
scale=default
data=
feats=
exp=
speech_teacher=
text_teacher=
speech_teacher_config=
text_teacher_config=
speech_layer=avg
text_layer=avg
nj=1
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
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/codec/$config.yaml; fi
data=${data:-data/mini_${scale}}
feats=${feats:-feats/mini_${scale}}
exp=${exp:-exp/${name}_${scale}}
train_manifest=$data/speech/train.jsonl
valid_manifest=$data/speech/valid.jsonl
test_manifest=$data/speech/test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    echo "stage 0: mini corpus ($scale) -> $data, transcribed clips -> $data/speech"
    python3 "$repo/egs/mini/local/make_corpus.py" "$data" --scale "$scale" --seed "$seed"
    for split in train valid test; do
        python3 -m audiocodec.semantic transcribed "$data/$split.jsonl" "$data/speech/$split.jsonl"
    done
fi

. "$repo/egs/utils/semantic_codec_stages.sh"
