"""A minimal web demo: reconstruct audio through any codec of the library.

    python demos/app.py [--model-dir DIR] [--server-name 127.0.0.1] [--server-port 7860] [--share]

``--model-dir`` adds every checkpoint under DIR to the model list; named configs (random weights)
are always listed so the page works on a fresh machine.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audiocodec  # noqa: E402
from audiocodec import audio as audio_utils  # noqa: E402

MAX_SECONDS = 60.0


def model_choices(model_dir: str | None) -> dict[str, str]:
    choices = {f"{name} (random weights)": name for name in audiocodec.list_codecs()}
    if model_dir:
        for path in sorted(Path(model_dir).rglob("*")):
            if path.suffix in (".safetensors", ".ckpt", ".th", ".pth", ".bin"):
                choices[str(path.relative_to(model_dir))] = str(path)
    return choices


@functools.lru_cache(maxsize=4)
def get_codec(spec: str):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec in audiocodec.list_codecs():
        return audiocodec.build_codec(spec).prepare_for_inference().to(device)
    return audiocodec.load_codec(spec, device=device)


def build_app(model_dir: str | None):
    import gradio as gr
    choices = model_choices(model_dir)

    def reconstruct(path, model_label, num_codebooks):
        if path is None:
            raise gr.Error("Upload or record some audio first.")
        try:
            wav, sr = audio_utils.load_audio(path)
        except audiocodec.AudioError as e:
            raise gr.Error(f"{e}. Upload a wav, flac, ogg or mp3 file.")
        if wav.shape[-1] / sr > MAX_SECONDS:
            raise gr.Error(f"The clip is {wav.shape[-1] / sr:.0f} s long; the demo takes up to {MAX_SECONDS:.0f} s.")
        codec = get_codec(choices[model_label])
        if codec.max_codebooks > 1:
            codec.set_num_codebooks(int(min(num_codebooks, codec.max_codebooks)))
        codes = codec.encode(wav, sr)
        out = codec.decode(codes)[0, 0].float().cpu().numpy()
        info = (f"{codec.name}: {codec.sample_rate} Hz, {codec.frame_rate:g} frames/s, {codes.num_codebooks} "
                f"codebook(s) of {codec.cardinality}, {codec.bitrate / 1000:.2f} kbps; {codes.tokens.shape[-1]} frames")
        return (codec.sample_rate, out), info

    with gr.Blocks(title="audiocodec") as app:
        gr.Markdown("# audiocodec\nEncode audio to tokens and decode it back.")
        with gr.Row():
            inp = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Input audio")
            out = gr.Audio(label="Reconstruction")
        model = gr.Dropdown(list(choices), value=next(iter(choices)), label="Model")
        k = gr.Slider(1, 32, value=8, step=1, label="Codebooks (RVQ codecs)")
        info = gr.Textbox(label="Codec", interactive=False)
        gr.Button("Reconstruct").click(reconstruct, [inp, model, k], [out, info])
    return app


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", default=None)
    p.add_argument("--server-name", default="127.0.0.1")
    p.add_argument("--server-port", type=int, default=7860)
    p.add_argument("--share", action="store_true")
    args = p.parse_args(argv)
    app = build_app(args.model_dir)
    app.queue(max_size=16).launch(server_name=args.server_name, server_port=args.server_port, share=args.share)


if __name__ == "__main__":
    main()
