#!/bin/bash
# The text-to-song pipeline on a lent GPU machine, from a song corpus (egs/mini/local/make_song_corpus.py) whose
# manifests and audio were carried there: (1) train the music RVQ codec (recipes/codec/music_rvq_40_small.yaml)
# on the train mixtures and stems, (2) encode the train / valid mixtures and stems with it, (3) train the song
# LM (recipes/song/mini.yaml) in each of MODES *at the same time* on the one GPU, for the same minutes (the
# same budget), (4) copy logs, the codec and the song models (fp16, in 15 MB parts) to OUT_DIR.
#
#   benchmarks/device/song_pipeline.sh SONGS_DIR CODEC_MINUTES LM_MINUTES RUN_DIR OUT_DIR "MODE ..." [--set ...]
#
# SONGS_DIR holds {train,valid}{,.vocal,.accompaniment}.jsonl and their audio; a missing accompaniment file is
# rebuilt as mixture - vocal (the corpus mixes exactly so), a missing mixture as vocal + accompaniment (the stems
# carried as Opus by pack_song_stems.py), which keeps what has to be carried small.
# Extra --set arguments go to the song LMs; CODEC_SETS="--set k=v ..." to the codec; DEVICE (default cuda) encodes.
# With CODEC=<codec file>, step (1) is skipped and CODEC_MINUTES ignored: the corpus is encoded with that codec;
# with TOKENS=<token folder> too (tokens made elsewhere with that codec, e.g. carried), step (2) is skipped as well
# (SONGS_DIR is then unused: pass any path). Rejoin parts with `cat OUT_DIR/NAME-fp16.part* > NAME.safetensors`.
set -u
songs=$1 codec_minutes=$2 lm_minutes=$3 run=$4 out=$5 modes=$6
shift 6
source "$(dirname "$0")/setup.sh"
mkdir -p "$out" "$run"
if [ -z "${TOKENS:-}" ]; then   # (1) the music codec, (2) its tokens of the corpus
python3 - "$songs" <<'PY' || exit 1
import json, sys
from pathlib import Path
import soundfile as sf
songs = Path(sys.argv[1])
rows = []
for split in ("train", "valid"):
    for kind in ("mixture", "vocal", "accompaniment"):
        name = f"{split}.jsonl" if kind == "mixture" else f"{split}.{kind}.jsonl"
        for line in open(songs / name):
            r = json.loads(line)
            path = songs / r["path"]
            stem = lambda name: next(path.parent.glob(name + ".*"))
            if kind == "accompaniment" and not path.exists():   # mixture = accompaniment + vocal
                mix, sr = sf.read(str(stem("mixture")), dtype="int32")
                voc, _ = sf.read(str(stem("vocal")), dtype="int32")
                sf.write(str(path), ((mix - voc) >> 16).astype("int16"), sr, subtype="PCM_16")
            if kind == "mixture" and not path.exists():   # the stems were carried (lossy): their sum
                voc, sr = sf.read(str(stem("vocal")), dtype="float32")
                acc, _ = sf.read(str(stem("accompaniment")), dtype="float32")
                n = min(len(voc), len(acc))
                sf.write(str(path), voc[:n] + acc[:n], sr, subtype="FLOAT")
            if split == "train":
                rows.append({**r, "id": f"{r['id']}.{kind}", "path": str(path)})
with open(songs / "codec_train.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
print(f"codec training manifest: {len(rows)} clips")
PY
nvidia-smi dmon -s u -d 10 > "$out/dmon-song.txt" 2>&1 &
dmon=$!
if [ -z "${CODEC:-}" ]; then
"${launch[@]}" recipes/codec/music_rvq_40_small.yaml --run-dir "$run/codec_run" \
  --set task.data.train="$songs/codec_train.jsonl" --set task.data.valid="$songs/valid.jsonl" \
  --set trainer.max_minutes="$codec_minutes" --set trainer.progress=false ${CODEC_SETS:-} || exit 1
cp "$run/codec_run/train.log" "$out/codec-train.log"
codec=$run/codec_run/codec
else
codec=$CODEC
fi
python3 -c 'import sys, logging
from audiocodec.data.song_synth import extract_song_tokens
logging.basicConfig(level=logging.INFO, format="%(message)s")
extract_song_tokens(sys.argv[1], sys.argv[2], codec=sys.argv[3], device=sys.argv[4], batch_size=32)' \
  "$songs" "$run/tokens" "$codec" "${DEVICE:-cuda}" > "$out/extract.log" 2>&1 || { tail "$out/extract.log"; exit 1; }
tokens=$run/tokens
else
codec=${CODEC:?CODEC must name the codec of TOKENS}
tokens=$TOKENS
nvidia-smi dmon -s u -d 10 > "$out/dmon-song.txt" 2>&1 &
dmon=$!
fi
pids=()
for mode in $modes; do
    "${launch[@]}" recipes/song/mini.yaml --run-dir "$run/song_$mode" --set task.mode="$mode" \
      --set task.train="$tokens/train" --set task.valid="$tokens/valid" --set task.codec="$codec" \
      --set trainer.max_minutes="$lm_minutes" --set trainer.schedule_by=time --set trainer.progress=false "$@" \
      > "$out/song_$mode.out" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
kill "$dmon"
if [ -z "${CODEC:-}" ]; then   # the codec trained here
python3 -m audiocodec convert "$codec" "$out/codec-fp16.safetensors" --dtype float16 --overwrite &&
  split -b 15M -d "$out/codec-fp16.safetensors" "$out/codec-fp16.part" && rm "$out/codec-fp16.safetensors"
fi
for mode in $modes; do
    cp "$run/song_$mode/train.log" "$out/song_$mode.log"
    for name in song best; do   # the final model, and the best by validation loss (trainer.best_metric)
        [ -e "$run/song_$mode/$name" ] || continue
        python3 - "$run/song_$mode/$name" "$out/${mode}_$name-fp16.safetensors" <<'PY'
import sys, torch
from audiocodec.song.model import load_song, save_song
save_song(load_song(sys.argv[1]), sys.argv[2], dtype=torch.float16)
PY
        split -b 15M -d "$out/${mode}_$name-fp16.safetensors" "$out/${mode}_$name-fp16.part" &&
            rm "$out/${mode}_$name-fp16.safetensors"
    done
done
exit $rc
