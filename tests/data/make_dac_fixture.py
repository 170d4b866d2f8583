"""Regenerate dac_tiny.pth / dac_tiny_ref.pt with the official package (run outside the project's venv:
``pip install torch==2.11.0 torchaudio==2.11.0 descript-audio-codec``; its deps downgrade protobuf).

    python tests/data/make_dac_fixture.py tests/data
"""
import sys
from pathlib import Path

import dac
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import synth_audio  # noqa: E402

KWARGS = dict(encoder_dim=2, encoder_rates=[2, 3], latent_dim=8, decoder_dim=8, decoder_rates=[3, 2],
              n_codebooks=3, codebook_size=16, codebook_dim=[4, 4, 2], quantizer_dropout=False, sample_rate=24000)


@torch.no_grad()
def main(out_dir: str, seed: int = 5):
    torch.manual_seed(seed)
    model = dac.DAC(**KWARGS).eval()
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # move every kind of parameter off its init value
        if name.endswith("alpha"):
            p.copy_(0.5 + 1.5 * torch.rand(p.shape, generator=g))
        elif name.endswith("bias"):
            p.copy_(0.01 * torch.randn(p.shape, generator=g))
        elif name.endswith("weight_g"):
            p.mul_(0.8 + 0.4 * torch.rand(p.shape, generator=g))
    # codebooks = in_proj'd residual encoder frames, so codes vary
    residual = model.encoder(model.preprocess(synth_audio(2.0, 24000, batch=2, seed=1), 24000))
    for q in model.quantizer.quantizers:
        flat = q.in_proj(residual).transpose(1, 2).reshape(-1, q.codebook_dim)
        n = q.codebook.weight.shape[0]
        idx = torch.randint(0, flat.shape[0], (n,), generator=g)
        q.codebook.weight.copy_(flat[idx] + 1e-3 * flat.std() * torch.randn(n, flat.shape[1], generator=g))
        residual = residual - q(residual)[0]
    model.save(f"{out_dir}/dac_tiny.pth", package=False)

    wav = synth_audio(0.01, 24000, batch=2, seed=6)[..., :233]
    z, codes, *_ = model.encode(model.preprocess(wav, 24000))
    ref = {"wav": wav, "codes": codes, "z_encode": z, "forward_audio": model(wav)["audio"]}
    for n in (1, 3):
        ref[f"audio_{n}"] = model.decode(model.quantizer.from_codes(codes[:, :n])[0])
    torch.save({k: v.contiguous() for k, v in ref.items()}, f"{out_dir}/dac_tiny_ref.pt")


if __name__ == "__main__":
    main(sys.argv[1])
