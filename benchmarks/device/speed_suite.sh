#!/usr/bin/env bash
# The speed measurements of issue #8 in one device call (a lent GPU's starts cost minutes, so few long calls):
# the GPU tests, then each benchmark under its own time limit, each writing OUT/<name>.txt (a call returns
# only the end of its output). Carry .whl (soundfile and its dependencies) and, for the official peers,
# .peers/WavTokenizer.
#
#   benchmarks/device/speed_suite.sh OUT [STEP ...]
#
# steps: tests tests_codec tests_KEYWORD (pytest -k KEYWORD) song song_stream song_mixed song_sdpa tts tts_valle train train_nchw train_ops train_fused train_compiled
#        train_compiled_loose codec codec_tm codec_switches (= codec_all codec_none codec_compiled_taps
#        codec_compiled_channels_last codec_cuda_split_bf16_search codec_cuda_matmul_attention) codec_b1_none
#        codec_b1_all codec_b1_SWITCH codec_b1_split2 codec_b1_split_all codec_b1_nosplit codec_b64fp32_SETTING
#        codec_autotune split_kernels profile profile_b1 timeline_b1 timeline_b1_split
#
# e.g. run(command="benchmarks/device/speed_suite.sh $OUT tests song", carry=[".whl"]). Without steps: all, in
# that order (about 15 minutes with the compiles: split them over two calls).
set -u
out=${1:?usage: speed_suite.sh OUT [STEP ...]}
shift
mkdir -p "$out"
. "$(dirname "$0")/setup.sh"
export PYTHONWARNINGS=ignore
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests song song_mixed song_sdpa tts tts_valle train train_nchw train_ops train_fused train_compiled train_compiled_loose codec codec_tm codec_switches codec_b1_none profile profile_b1)
repo=.peers/WavTokenizer
peer=()
[ -d "$repo" ] && peer=(--wavtokenizer-repo "$repo")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

step() {   # step NAME SECONDS COMMAND...: run it under a time limit into OUT/NAME.txt, print its summary lines
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    echo "   exit $? after ${SECONDS}s of the suite"
    grep -E '^\||passed|failed|skipped|x realtime|steps/s|tokens/s|== |Error|timeline|gap |wall time|replay|first streamed' \
        "$out/$name.txt" | tail -25
}

run_switches() {   # run_switches BATCH DTYPE SETTING...: one codec run per setting (none, all or a switch name)
    local batch=$1 dtype=$2 sw name
    shift 2
    for sw in "$@"; do
        case $sw in
            none) set -- "${peer[@]}" ;;   # the defaults
            all) set -- --switch compiled_taps=True --switch compiled_channels_last=True \
                     --switch cuda_split_bf16_search=True --switch cuda_matmul_attention=True \
                     --switch cuda_split_bf16_gemms=True --switch cuda_split_bf16_convs=True "${peer[@]}" ;;
            split2) set -- --switch cuda_split_bf16_gemms=True --switch split_bf16_parts=2 ;;   # ~2^-16 GEMMs
            split_all) set -- --switch cuda_split_bf16_gemms=True --switch cuda_split_bf16_convs=True ;;
            # the defaults less the split-bf16 GEMMs and convs (fp32 GEMMs, cuDNN's TF32 convs)
            nosplit) set -- --switch cuda_split_bf16_gemms=False --switch cuda_split_bf16_convs=False ;;
            *) set -- --switch "$sw=True" ;;
        esac
        name=codec_$sw
        [ "$batch" = 1 ] && name=codec_b1_$sw
        [ "$batch$dtype" = 64fp32 ] && name=codec_b64fp32_$sw
        step "$name" 200 python3 benchmarks/codec_speed.py --device cuda --batch-sizes "$batch" --dtypes "$dtype" \
            --seconds 10 --repeats 20 --models wavtokenizer-75 --peers none --compile --cuda-graphs "$@"
    done
}

for s in "${steps[@]}"; do
    case $s in
        tests) step tests 420 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py ;;
        tests_codec) step tests_codec 300 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "codec or search or attention" ;;
        tests_*) step "$s" 300 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "${s#tests_}" ;;   # tests_split: -k split
        # the default model's shapes (song-mini, 8 x 1024 codes at 40 Hz) with random weights: its 62 MB file
        # does not fit in a device call's 64 MiB working tree
        song) step song 240 python3 benchmarks/song_speed.py --device cuda --model random --batch-sizes 1 \
                  --modes compiled --steps-per-graph 8 --repeats 2 --profile ;;
        # streamed: the first audio chunk's latency (random weights of the music codec decode the chunks)
        song_stream) step song_stream 240 python3 benchmarks/song_speed.py --device cuda --model random --batch-sizes 1 \
                         --modes compiled --steps-per-graph 8 --repeats 2 --stream --peers ;;
        # one track in the delay pattern: the same work per second of audio as the MusicGen peer's rows
        song_mixed) step song_mixed 240 python3 benchmarks/song_speed.py --device cuda --model random --mode mixed \
                        --batch-sizes 1 16 --modes compiled --steps-per-graph 8 --repeats 2 ;;
        # flash alone is not offered: it runs no masked attention (the conditioners', the cross-attention's)
        song_sdpa) for b in efficient math; do
                       step "song_$b" 200 python3 benchmarks/song_speed.py --device cuda --model random \
                           --batch-sizes 1 --modes compiled --steps-per-graph 8 --repeats 2 --sdpa "$b"
                   done ;;
        tts) step tts 360 python3 benchmarks/tts_speed.py --device cuda --batch-sizes 1 64 --modes compiled \
                 --steps-per-graph 8 ;;
        tts_valle) step tts_valle 360 python3 benchmarks/tts_speed.py --device cuda --batch-sizes 1 64 \
                       --modes compiled --steps-per-graph 8 --lm dim=1024 --lm num_layers=12 --lm num_heads=16 ;;
        train) step train 300 python3 benchmarks/train_speed.py --device cuda --dtypes bf16 --steps 12 \
                   --warmup 4 --profile 30 "${peer[@]}" ;;
        train_nchw) step train_nchw 200 python3 benchmarks/train_speed.py --device cuda --only ours --dtypes bf16 \
                        --steps 12 --warmup 4 --set 'trainer.channels_last=[]' ;;
        train_ops) step train_ops 200 python3 benchmarks/train_speed.py --device cuda --only ours --dtypes bf16 \
                       --steps 12 --warmup 4 --profile 40 --profile-ops ;;
        train_fused) step train_fused 300 python3 benchmarks/train_speed.py --device cuda --only ours --dtypes bf16 \
                         --steps 12 --warmup 6 --profile 30 --fused-bias-act ;;
        train_compiled) step train_compiled 420 python3 benchmarks/train_speed.py --device cuda --only ours \
                            --dtypes bf16 --steps 12 --warmup 6 --profile 30 --set 'trainer.compile=[codec.decoder,disc]' ;;
        train_compiled_loose) step train_compiled_loose 420 python3 benchmarks/train_speed.py --device cuda \
                                  --only ours --dtypes bf16 --steps 12 --warmup 6 --profile 30 \
                                  --set 'trainer.compile=[codec.decoder,disc]' --inductor keep_output_stride=False ;;
        codec) step codec 540 python3 benchmarks/codec_speed.py --device cuda --batch-sizes 1 64 --dtypes fp32 bf16 \
                   --seconds 10 --repeats 20 --models wavtokenizer-75 --peers none "${peer[@]}" --compile --cuda-graphs ;;
        codec_tm) step codec_tm 540 python3 benchmarks/codec_speed.py --device cuda --batch-sizes 64 --dtypes bf16 \
                      --seconds 10 --repeats 20 --models wavtokenizer-75 --peers none --compile --cuda-graphs \
                      --switch cuda_time_major=True ;;
        # the codec's speed switches, batch 64 bf16 with the fp32-vs-bf16 code agreement: all on (the official code
        # beside), none set (the defaults, the official code beside), each turned on; codec_switches runs these six
        codec_switches) run_switches 64 bf16 all none compiled_taps compiled_channels_last cuda_split_bf16_search \
                                     cuda_matmul_attention ;;
        codec_all|codec_none|codec_compiled_taps|codec_compiled_channels_last|codec_cuda_split_bf16_search|\
        codec_cuda_matmul_attention)
            run_switches 64 bf16 "${s#codec_}" ;;
        # batch 1 fp32: the defaults (the official code beside), every switch on, or one switch
        codec_b1_*) run_switches 1 fp32 "${s#codec_b1_}" ;;
        # batch 64 fp32: the defaults (the official code beside) or a setting of run_switches
        codec_b64fp32_*) run_switches 64 fp32 "${s#codec_b64fp32_}" ;;
        # inductor's GEMM autotuning (Triton templates against cuBLAS) for the compiled codec; long compiles
        codec_autotune) step codec_autotune 540 python3 benchmarks/codec_speed.py --device cuda --batch-sizes 1 \
                            --dtypes fp32 --seconds 10 --repeats 20 --models wavtokenizer-75 --peers none \
                            --compile max-autotune-no-cudagraphs --cuda-graphs ;;
        # the split-bf16 operand kernels and GEMMs alone (benchmarks/split_bf16_speed.py)
        split_kernels) step split_kernels 200 python3 benchmarks/split_bf16_speed.py ;;
        profile) step profile 200 python3 benchmarks/profile_codec.py --batch 64 --dtype bf16 --compile --rows 40 ;;
        profile_b1) step profile_b1 200 python3 benchmarks/profile_codec.py --batch 1 --dtype fp32 --compile --rows 40 ;;
        # where a batch-1 fp32 CUDA-graph call's wall time goes (host lead, kernels, gaps), and the graph alone
        timeline_b1) step timeline_b1 200 python3 benchmarks/profile_codec.py --batch 1 --dtype fp32 --compile \
                         --cuda-graphs --timeline --rows 12 ;;
        timeline_b1_split) step timeline_b1_split 200 python3 benchmarks/profile_codec.py --batch 1 --dtype fp32 \
                               --compile --cuda-graphs --timeline --rows 12 --switch cuda_split_bf16_gemms=True \
                               --switch cuda_split_bf16_convs=True ;;
        *) echo "unknown step $s (tests tests_codec tests_KEYWORD song song_mixed song_sdpa tts tts_valle train train_nchw train_ops train_fused train_compiled train_compiled_loose codec codec_tm codec_switches codec_all codec_none codec_compiled_taps codec_compiled_channels_last codec_cuda_split_bf16_search codec_cuda_matmul_attention codec_b1_none codec_b1_all codec_b1_SWITCH codec_b1_split2 codec_b1_split_all codec_b1_nosplit codec_b64fp32_SETTING codec_autotune split_kernels profile profile_b1 timeline_b1 timeline_b1_split)"
           exit 2 ;;
    esac
done
