#!/usr/bin/env bash
# Semantic codec recipe (SpeechTokenizer / DM-Codec) on LibriSpeech: 960 h of read English at 16 kHz, with
# transcripts, distilled from a speech teacher (HuBERT-base), a language teacher (BERT-base), or both.
#
# Get LibriSpeech from https://www.openslr.org/12/ and extract the subsets into one folder; put the teachers
# in local folders (save_pretrained layout, e.g. hubert-base-ls960 with its preprocessor_config.json, and
# bert-base-uncased with its tokenizer). Nothing is downloaded.
#
#   ./run.sh --root /data/LibriSpeech --speech_teacher models/hubert-base-ls960            # SpeechTokenizer
#   ./run.sh --root /data/LibriSpeech --config speechtokenizer_dm_codec \
#            --speech_teacher models/hubert-base-ls960 --text_teacher models/bert-base-uncased  # DM-Codec
#   ./run.sh --stage 1 --stop_stage 1 --nj 4 --speech_teacher models/hubert-base-ls960     # features only
#
# Stages (each one command of the audiocodec package; paths are relative to this folder):
#   0  write jsonl manifests (with transcripts) of the local corpus at --root into $data
#      (official subsets: train-*, dev-clean, test-clean)
#   1  teacher features of the train and valid clips into $feats/<teacher> (python -m audiocodec.semantic
#      features), for each teacher the config distils from (speech: HuBERT / wav2vec2, text: BERT of the
#      transcript); resumable: run it again to continue; --nj N runs N processes per teacher
#   2  train recipes/codec/$config.yaml with those features into $exp (run it again to resume; torchrun when
#      --ngpu > 1); the codec is exported to $exp/codec at every checkpoint
#   3  reconstruct the test set with $exp/codec into $exp/decode/test/ and score it (PESQ, STOI, SI-SDR,
#      mel / STFT distance, V/UV F1, codebook use, bitrate) into $exp/decode/metrics.json
#
# Disk: HuBERT-base features of 960 h at 50 Hz in float16 take about 260 GB (768 values per frame);
# BERT-base features as much again. Teacher time: HuBERT-base over 960 h is a few GPU-hours.
#
# Options:
#   --root DIR                      the extracted corpus (needed by stage 0)
#   --stage N --stop_stage M        stages to run (default 0 .. 3)
#   --config NAME|FILE              a recipe of recipes/codec (without .yaml) or a YAML file (default
#                                   speechtokenizer_16k; also speechtokenizer_dm_codec, dm_codec_lm)
#   --data DIR                      manifest folder (default data)
#   --feats DIR                     teacher feature folder (default feats)
#   --exp DIR                       run folder (default exp/<config>)
#   --speech_teacher DIR            a local HuBERT / wav2vec2 / WavLM folder (save_pretrained layout)
#   --text_teacher DIR              a local BERT folder (model + tokenizer)
#   --speech_teacher_config JSON    instead: a random speech teacher (transformers HubertConfig arguments)
#   --text_teacher_config JSON      instead: a random text teacher (BertConfig arguments; character vocabulary)
#   --speech_layer L --text_layer L teacher hidden states: avg (default), an index, or indices "3,4,5"
#   --nj N                          feature processes per teacher (default 1; they share --device)
#   --set KEY=VALUE                 training config override, repeatable (e.g. --set trainer.batch_size=16)
#   --ngpu N                        GPUs for training (default 1)
#   --seed N                        training seed (default 0)
#   --device DEV                    device of stages 1 and 3 (default auto)
#   --metrics LIST                  metrics of stage 3, comma-separated (default: audiocodec eval's)
#   --workers N                     threads reading audio headers in stage 0 (default 8)
#   --train_subsets "A B"           training subsets (default "train-clean-100 train-clean-360 train-other-500")
#   --valid_subsets "A"             validation subsets (default dev-clean)
#   --test_subsets "A"              test subsets (default test-clean)
set -euo pipefail

root=
stage=0
stop_stage=3
config=speechtokenizer_16k
data=data
feats=feats
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
workers=8
train_subsets="train-clean-100 train-clean-360 train-other-500"
valid_subsets=dev-clean
test_subsets=test-clean
sets=()

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../utils/parse_options.sh"

cd "$here"
repo=$(cd ../../.. && pwd)
if [ -f "$config" ]; then config_file=$config; else config_file=$repo/recipes/codec/$config.yaml; fi
exp=${exp:-exp/$(basename "$config" .yaml)}
train_manifest=$data/train.jsonl
valid_manifest=$data/valid.jsonl
test_manifest=$data/test.jsonl

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
    if [ -z "$root" ] || [ ! -d "$root" ]; then
        echo "stage 0 needs the corpus: pass --root DIR (got '${root}')." >&2
        echo "Download the subsets of LibriSpeech from https://www.openslr.org/12/," >&2
        echo "extract them into one folder and pass --root DIR." >&2
        exit 2
    fi
    echo "stage 0: manifests of $root -> $data"
    audiocodec prepare librispeech "$root" "$train_manifest" --subsets $train_subsets --workers "$workers" \
        --require-text
    audiocodec prepare librispeech "$root" "$valid_manifest" --subsets $valid_subsets --workers "$workers" \
        --require-text
    audiocodec prepare librispeech "$root" "$test_manifest" --subsets $test_subsets --workers "$workers" \
        --require-text
fi

. "$repo/egs/utils/semantic_codec_stages.sh"
