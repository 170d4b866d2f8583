"""GPU behaviour (run on a CUDA machine; skipped elsewhere): CUDA-graph replay and bf16 autocast give
the same codes and audio as the plain fp32 path."""
import pytest
import torch

import audiocodec
from helpers import synth_audio

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _seeded(name):
    torch.manual_seed(0)
    codec = audiocodec.build_codec(name).prepare_for_inference().cuda()
    wav = synth_audio(2.0, batch=2, seed=1).cuda()
    with torch.no_grad():
        frames = codec.encoder(wav).transpose(1, 2).reshape(-1, codec.encoder.dimension)
        for layer in codec.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(frames[torch.randint(0, frames.shape[0], (book.embed.shape[0],), device="cuda")])
            frames = frames - book.embed[torch.cdist(frames, book.embed).argmin(-1)]
    return codec


@cuda
@pytest.mark.parametrize("name", ["wavtokenizer-75", "encodec-24k"])
def test_cuda_graphs_match_eager(name):
    codec = _seeded(name)
    wav = synth_audio(1.5, batch=3, seed=2).cuda()
    ref_codes = codec.encode(wav)
    ref_audio = codec.decode(ref_codes)
    codec.use_cuda_graphs()
    for _ in range(3):  # capture, then replays
        codes = codec.encode(wav)
        audio = codec.decode(codes)
        assert torch.equal(codes.tokens, ref_codes.tokens)
        assert (audio - ref_audio).abs().max() < 1e-5
    other = synth_audio(0.7, batch=1, seed=3).cuda()  # a new shape gets its own graph
    codec.use_cuda_graphs(False)
    expected = codec.decode(codec.encode(other))
    codec.use_cuda_graphs()
    assert (codec.decode(codec.encode(other)) - expected).abs().max() < 1e-5


@cuda
def test_cuda_matches_cpu():
    codec = _seeded("wavtokenizer-75")
    wav = synth_audio(1.0, batch=2, seed=4)
    gpu = codec.encode(wav.cuda()).tokens.cpu()
    cpu = codec.cpu().encode(wav).tokens
    assert (gpu == cpu).float().mean() > 0.95  # cuDNN uses TF32 convolutions by default


@cuda
def test_nonfinite_gradient_step_is_skipped_on_the_device(tmp_path):
    """Fused AdamW on the GPU skips a step with a NaN gradient through ``found_inf`` (no host sync per
    step): that step leaves the weights as they were, and the skip is counted at the next log."""
    from audiocodec.train import Trainer
    config = {"name": "toy", "task": {"type": "toy_regression", "num_samples": 64, "val_samples": 0},
              "trainer": {"max_steps": 3, "batch_size": 8, "log_every": 1, "val_every": 0, "ckpt_every": 100,
                          "progress": False, "device": "cuda"},
              "optim": {"main": {"lr": 0.01}}}
    trainer = Trainer(config, run_dir=tmp_path / "run")
    trainer.fit(until_step=1)
    model = next(iter(trainer.task.modules.values()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [p.register_hook(lambda g: g * float("nan")) for p in model.parameters()]
    trainer.fit(until_step=2)
    for h in hooks:
        h.remove()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert trainer.skipped.get("main") == 1
    trainer.fit()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
