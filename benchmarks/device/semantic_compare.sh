#!/bin/bash
# Does semantic distillation pay off at the same training budget? On a lent GPU machine, from a speech corpus
# carried there (DATA_DIR/{train,valid}.jsonl: id, path relative to DATA_DIR, text, speaker, duration, 16 kHz):
#   (1) train the CTC speech teacher (benchmarks/device/train_asr.sh, recipes/asr/ctc_mini.yaml) for ASR_MINUTES,
#   (2) its features (mean of all hidden states) of the train + valid clips -> RUN_DIR/feats/speech,
#   (3) two SpeechTokenizer codecs (recipes/codec/speechtokenizer_16k.yaml) *at the same time* on the one GPU,
#       same seed, data and CODEC_MINUTES (the LR schedule spread over them): RUN_DIR/sm distilled from the
#       teacher (RVQ layer 0 -> its features), RUN_DIR/plain without distillation (the same model: its
#       semantic head is built but unused),
#   (4) score each codec on the valid clips (audiocodec eval: PESQ, STOI, mel, ..., WER / CER of the teacher
#       on the resynthesis against its transcript of the original) and probe its first codebook for the
#       words (audiocodec probe, fitted on PROBE_CLIPS train clips); the teacher's own WER / CER on the
#       original valid audio against the manifest's text is the reference line.
# OUT_DIR gets asr-train.log, {sm,plain}-train.log, {sm,plain}-eval.json, {sm,plain}-probe.json,
# teacher-eval.json (8 files: what one device call returns at most); the table printed at the end is also
# RUN_DIR/summary.txt; the codecs, the teacher, the features and every command's output stay in RUN_DIR.
#
#   benchmarks/device/semantic_compare.sh ASR_MINUTES CODEC_MINUTES DATA_DIR RUN_DIR OUT_DIR [--set key=value ...]
#
# Extra --set arguments go to both codec runs; ASR_SETS="--set k=v ..." to the teacher's training.
# TEACHER=<folder> (a ctc_asr export, e.g. an earlier RUN_DIR/asr/best) skips (1); ASR_MINUTES is then ignored.
# LIVE_TEACHER=1: no feature cache (step 2 skipped); the SM run runs the teacher on each batch itself.
# METRICS: the metrics of `audiocodec eval` (default its own: e.g. leave pesq out where the package is missing);
# SAVE_AUDIO=1 keeps the resynthesised valid clips in RUN_DIR/<name>/decode and puts them in OUT_DIR as FLAC
# tar parts of 15 MB (<name>-decode.tar.partNN; `cat` them) to score them elsewhere (e.g. PESQ).
# DEVICE (default cuda): features, eval and probe; WORKERS (default 4): data loaders of each codec run and
# scoring processes of each eval; NJ (default 4): feature processes; SEED (default 0); PROBE_CLIPS (2000).
# Runs from the repository root, on one GPU (NGPU is not for this script: the two runs share the GPU).
# The teacher and codecs stay in RUN_DIR: run again with TEACHER=RUN_DIR/asr/best to reuse the teacher (the
# features of RUN_DIR/feats/speech are reused too, the codec runs resume from their checkpoints).
set -u
if [ $# -lt 5 ]; then
    sed -n '/^#   benchmarks/p' "$0" >&2
    exit 2
fi
asr_minutes=$1 codec_minutes=$2 data=$3 run=$4 out=$5
shift 5
source "$(dirname "$0")/setup.sh"
mkdir -p "$out" "$run"
device=${DEVICE:-cuda} workers=${WORKERS:-4} nj=${NJ:-4}
fail() { echo "semantic_compare: $*" >&2; exit 1; }
[ -f "$data/train.jsonl" ] && [ -f "$data/valid.jsonl" ] || fail "DATA_DIR $data lacks train.jsonl / valid.jsonl"
start=$SECONDS
stamp() { echo "[$(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s] $*"; }

# (1) the teacher
if [ -n "${TEACHER:-}" ]; then
    teacher=$TEACHER
else
    stamp "step 1: train the CTC teacher for $asr_minutes min -> $run/asr"
    # its exports stay in RUN_DIR (tars of ~26 MB would not come back from the machine anyway); log to OUT_DIR
    WHEELS=none "$(dirname "$0")/train_asr.sh" "$asr_minutes" "$run/asr" "$data" "$run/asr_out" ${ASR_SETS:-} \
        > "$run/asr.out" 2>&1
    rc=$?
    cp "$run/asr_out/asr-train.log" "$out/" 2>/dev/null
    [ $rc -eq 0 ] || { tail -n 20 "$run/asr.out" >&2; fail "step 1 (teacher training) failed (exit $rc): see $run/asr.out"; }
    teacher=$run/asr/best
    [ -d "$teacher" ] || teacher=$run/asr/asr
fi
dim=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1] + "/config.json"))["hidden_size"])' \
    "$teacher") || fail "step 1: no teacher model in $teacher (config.json with hidden_size)"
stamp "teacher $teacher (hidden size $dim)"

# (2) its features of train + valid (resumable: a second run computes only what is missing); LIVE_TEACHER=1:
# none, the codec run computes them batch by batch on the GPU (the teacher is small)
feats=$run/feats/speech
if [ -n "${LIVE_TEACHER:-}" ]; then
    stamp "step 2: skipped (LIVE_TEACHER: the SM run computes the teacher's features itself)"
else
stamp "step 2: teacher features -> $feats ($nj processes)"
pids=()
for ((rank = 0; rank < nj; rank++)); do
    python3 -m audiocodec.semantic features "$data/train.jsonl" "$data/valid.jsonl" "$feats" --teacher speech \
        --teacher-path "$teacher" --layer avg --device "$device" --rank $rank --world-size "$nj" --quiet \
        > "$run/feats-$rank.out" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc -eq 0 ] || { tail -n 5 "$run"/feats-*.out >&2; fail "step 2 (teacher features) failed: see $run/feats-*.out and $feats/failed*.jsonl"; }
fi
teacher_source=(--set "task.distillation.features.speech=$feats")
[ -n "${LIVE_TEACHER:-}" ] && teacher_source=(--set task.distillation.features=null
                                             --set "task.distillation.live={speech: {path: $teacher}}")

# (3) the two codecs side by side: same seed, data, minutes; distillation off in `plain` whatever "$@" says
stamp "step 3: codecs sm and plain, $codec_minutes min each, at the same time"
common=(recipes/codec/speechtokenizer_16k.yaml --set "task.data.train=$data/train.jsonl"
        --set "task.data.valid=$data/valid.jsonl" --set "task.codec_overrides.quantizer.semantic_dim=$dim"
        --set "trainer.seed=${SEED:-0}" --set "trainer.max_minutes=$codec_minutes" --set trainer.schedule_by=time
        --set trainer.progress=false --set "trainer.num_workers=$workers")
"${launch[@]}" "${common[@]}" --run-dir "$run/sm" "${teacher_source[@]}" "$@" \
    > "$run/sm.out" 2>&1 &
sm_pid=$!
"${launch[@]}" "${common[@]}" --run-dir "$run/plain" "$@" --set task.distillation=null \
    --set task.loss.weights.distillation=0 > "$run/plain.out" 2>&1 &
plain_pid=$!
failed=
wait $sm_pid || failed="$failed sm"
wait $plain_pid || failed="$failed plain"
for name in sm plain; do
    cp "$run/$name/train.log" "$out/$name-train.log" 2>/dev/null
done
if [ -n "$failed" ]; then
    for name in $failed; do echo "--- $name:" >&2; tail -n 15 "$run/$name.out" >&2; done
    fail "step 3 (codec training) failed for:$failed (see $run/<name>.out)"
fi

# (4) scores of each codec, the probe, the teacher's reference line, all side by side
stamp "step 4: eval, probe, teacher reference"
python3 - "$data/train.jsonl" "$run/probe_train.jsonl" "${PROBE_CLIPS:-2000}" <<'PY' || fail "step 4: cannot write the probe's train subset"
import json, sys
from audiocodec.data.manifest import read_manifest
records, n = read_manifest(sys.argv[1]), int(sys.argv[3])
subset = records[::max(1, len(records) // n)][:n]   # spread over the manifest (it is sorted by speaker)
with open(sys.argv[2], "w") as f:
    f.writelines(json.dumps({**r, "path": str(r["path"])}) + "\n" for r in subset)
print(f"probe train subset: {len(subset)} of {len(records)} clips")
PY
python3 - "$teacher" "$data/valid.jsonl" "$out/teacher-eval.json" "$device" > "$run/teacher-eval.out" 2>&1 <<'PY' &
import json, sys
from pathlib import Path
import jiwer, numpy as np
from audiocodec.audio import load_audio
from audiocodec.data.manifest import read_manifest
from audiocodec.metrics.asr import ASRScorer, normalize_words
from audiocodec.train.ctc_task import INFO_NAME, TranscriptNormalizer
teacher, manifest, out, device = sys.argv[1:]
info = Path(teacher, INFO_NAME)
norm = TranscriptNormalizer(**(json.loads(info.read_text()).get("text") or {}) if info.is_file() else {})
asr, rows = ASRScorer(teacher, device=device), []
for r in read_manifest(manifest):
    wav, sr = load_audio(r["path"])
    truth, heard = norm(r["text"]) or "<silence>", normalize_words(asr.transcribe(wav.mean(0), sr)) or "<silence>"
    rows.append(dict(file=r["id"], text=truth, heard=heard, wer=jiwer.wer(truth, heard), cer=jiwer.cer(truth, heard)))
summary = {m: dict(mean=float(np.mean([x[m] for x in rows])), count=len(rows)) for m in ("wer", "cer")}
Path(out).write_text(json.dumps(dict(info=dict(teacher=teacher, manifest=manifest, against="manifest text"),
                                     summary=summary, files=rows), indent=1))
print(json.dumps(summary))
PY
pids=($!) names=(teacher)
for name in sm plain; do
    python3 -m audiocodec eval --manifest "$data/valid.jsonl" --model "$run/$name/codec" --asr-model "$teacher" \
        ${METRICS:+--metrics "$METRICS"} ${SAVE_AUDIO:+--save-audio "$run/$name/decode"} \
        --device "$device" --workers "$((workers > 0 ? workers : 1))" --json "$out/$name-eval.json" --quiet > "$run/$name-eval.out" 2>&1 &
    pids+=($!) names+=("$name eval")
    python3 -m audiocodec probe "$run/probe_train.jsonl" "$data/valid.jsonl" --model "$run/$name/codec" --kind word \
        --device "$device" --json "$out/$name-probe.json" > "$run/$name-probe.out" 2>&1 &
    pids+=($!) names+=("$name probe")
done
failed=
for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed="$failed, ${names[$i]}"; done
[ -z "$failed" ] || echo "semantic_compare: step 4 failed for ${failed#, } (see $run/*-eval.out, $run/*-probe.out)" >&2

if [ -n "${SAVE_AUDIO:-}" ]; then   # the resynthesised valid clips as FLAC, in 15 MB parts (PESQ elsewhere)
    for name in sm plain; do
        [ -d "$run/$name/decode" ] || continue
        python3 - "$run/$name/decode" "$run/$name/decode_flac" <<'PY' &&
import sys
from pathlib import Path
import soundfile as sf
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for wav in src.rglob("*.wav"):
    audio, sr = sf.read(str(wav))
    target = dst / wav.relative_to(src).with_suffix(".flac")
    target.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(target), audio, sr, subtype="PCM_16")
PY
        tar cf - -C "$run/$name" decode_flac | split -b 15M -d - "$out/$name-decode.tar.part"
    done
fi
python3 - "$out" "$run" <<'PY' | tee "$run/summary.txt"
import json, re, sys
from pathlib import Path
out, run = Path(sys.argv[1]), Path(sys.argv[2])
def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {}
def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"
def steps(name):   # the last step the train log mentions
    found = re.findall(r"\bstep (\d+)", (out / f"{name}-train.log").read_text()) if (out / f"{name}-train.log").is_file() else []
    return found[-1] if found else "-"
print(f"{'name':<9}{'steps':>7}{'PESQ':>7}{'STOI':>7}{'mel':>7}{'WER':>7}{'CER':>7}{'probeF1':>9}{'floor':>7}")
t = load("teacher-eval.json").get("summary", {})
print(f"{'teacher':<9}{'-':>7}{'-':>7}{'-':>7}{'-':>7}{fmt(t.get('wer', {}).get('mean')):>7}"
      f"{fmt(t.get('cer', {}).get('mean')):>7}{'-':>9}{'-':>7}   (original audio vs text)")
for name in ("sm", "plain"):
    s, p = load(f"{name}-eval.json").get("summary", {}), load(f"{name}-probe.json")
    m = lambda k: s.get(k, {}).get("mean")
    print(f"{name:<9}{steps(name):>7}{fmt(m('pesq'), 2):>7}{fmt(m('stoi')):>7}{fmt(m('mel_distance')):>7}"
          f"{fmt(m('wer')):>7}{fmt(m('cer')):>7}{fmt(p.get('micro_f1')):>9}{fmt(p.get('label_frequency_f1')):>7}")
print("codec WER / CER: the teacher on the resynthesis vs the teacher on the original; floor: the probe's "
      "micro-F1 from label frequencies alone")
PY
stamp "done"
[ -z "$failed" ] || exit 1
