"""Quantizers: k-means init, EMA updates, dead-code restart, RVQ, dropout, fp32 codes under autocast."""
import torch

from audiocodec.quantize import EuclideanCodebook, VectorQuantizer, euclidean_rvq


def blobs(n=512, centers=((0, 0), (5, 5), (-5, 5), (5, -5)), seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(centers, dtype=torch.float)
    idx = torch.randint(0, len(c), (n,), generator=g)
    return c[idx] + 0.1 * torch.randn(n, 2, generator=g), c


def test_kmeans_init_finds_the_clusters():
    torch.manual_seed(0)
    x, centers = blobs()
    book = EuclideanCodebook(2, 8, kmeans_iters=20, threshold_ema_dead_code=0).train()
    assert book.inited.item() == 0
    book(x)
    assert book.inited.item() == 1
    # every true centre has a code within 0.2
    assert torch.cdist(centers, book.embed).min(dim=1).values.max() < 0.2


def test_ema_moves_codes_towards_their_data():
    torch.manual_seed(0)
    x, _ = blobs(centers=((3, 3),))
    book = EuclideanCodebook(2, 1, decay=0.5, kmeans_init=False, threshold_ema_dead_code=0).train()
    book.embed.zero_()
    book.embed_avg.zero_()
    for _ in range(20):
        book(x)
    assert torch.allclose(book.embed[0], torch.tensor([3.0, 3.0]), atol=0.05)


def test_dead_code_restart_is_not_undone_by_stale_ema():
    """Regression test for the stale-count bug: a restarted code must keep its new vector."""
    torch.manual_seed(0)
    x, _ = blobs(centers=((0, 0), (1, 1)))
    book = EuclideanCodebook(2, 8, decay=0.99, kmeans_init=False, threshold_ema_dead_code=2.0).train()
    with torch.no_grad():
        book.embed.copy_(torch.full((8, 2), 100.0))  # seven codes far from the data ...
        book.embed[0] = torch.tensor([0.5, 0.5])
        book.cluster_size.copy_(torch.full((8,), 0.5))  # ... with stale EMA statistics below the threshold
        book.cluster_size[0] = 100.0
        book.embed_avg.copy_(book.embed * book.cluster_size[:, None])
    book(x)  # restarts the dead codes from batch vectors
    assert book.embed[1:].abs().max() < 2.0
    for _ in range(3):  # later steps keep them near the data instead of reverting to the stale average
        book(x)
    assert book.embed[1:].abs().max() < 2.0
    codes, _ = book(x)
    assert len(codes.unique()) >= 4  # the restarted codes are used


def test_straight_through_and_commitment():
    vq = VectorQuantizer(8, 16, kmeans_init=False).train()
    x = torch.randn(2, 8, 10, requires_grad=True)
    q, codes, losses = vq(x)
    assert q.shape == x.shape and codes.shape == (2, 10)
    assert losses["commitment"] > 0
    q.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_rvq_more_codebooks_reconstruct_better():
    torch.manual_seed(0)
    rvq = euclidean_rvq(dim=16, num_quantizers=6, codebook_size=32, kmeans_iters=10).train()
    x = torch.randn(8, 16, 50)
    for _ in range(5):
        rvq(x)
    rvq.eval()
    errors = [(rvq.decode(rvq.encode(x, n_q=k)) - x).pow(2).mean().item() for k in range(1, 7)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_quantizer_dropout_varies_codebooks_in_training_only():
    torch.manual_seed(0)
    rvq = euclidean_rvq(dim=8, num_quantizers=8, codebook_size=16, quantizer_dropout=1.0).train()
    x = torch.randn(2, 8, 5)
    used = {rvq(x).codes.shape[1] for _ in range(30)}
    assert len(used) > 3 and max(used) <= 8
    rvq.eval()
    assert {rvq(x).codes.shape[1] for _ in range(5)} == {8}


def test_codes_do_not_change_under_bf16_autocast():
    torch.manual_seed(0)
    rvq = euclidean_rvq(dim=64, num_quantizers=4, codebook_size=256).train()
    x = torch.randn(4, 64, 100)
    rvq(x)
    rvq.eval()
    ref = rvq.encode(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(rvq.encode(x), ref)
        assert torch.equal(rvq(x).codes, ref)


def test_split_bf16_search_is_as_near_the_exact_argmin_as_fp32():
    """nearest_code_split_bf16 (one bf16 GEMM of split operands; here an fp32 GEMM of the same bf16 values):
    scores within ~2^-16 of the fp64 ones, and its codes the fp64 argmin about as often as the fp32 search's
    (codebooks drawn near the data, so near-ties are common)."""
    from audiocodec.nn.split_bf16 import mm_fp32
    from audiocodec.quantize.vq import nearest_code, nearest_code_split_bf16, split_bf16_codebook, \
        split_bf16_queries
    g = torch.Generator().manual_seed(0)
    for scale in (1.0, 40.0):
        x = torch.randn(8000, 128, generator=g) * scale
        e = x[torch.randint(0, 8000, (1024,), generator=g)] + 0.05 * scale * torch.randn(1024, 128, generator=g)
        exact_scores = e.double().pow(2).sum(1)[None] - 2 * x.double() @ e.double().t()
        scores = mm_fp32(split_bf16_queries(x), split_bf16_codebook(e, e.pow(2).sum(1)).t())
        assert ((scores.double() - exact_scores).abs().max() / exact_scores.abs().max()) < 2 ** -16
        exact = exact_scores.argmin(-1)
        fp32_hits = (nearest_code(x, e) == exact).float().mean()
        split_hits = (nearest_code_split_bf16(x, e) == exact).float().mean()
        assert split_hits >= fp32_hits - 1e-3 and split_hits > 0.998


def test_seeding_codebooks_from_latents_draws_residual_rows_and_spreads_the_codes():
    from audiocodec.quantize.vq import seed_codebooks_from_latents
    torch.manual_seed(0)
    rvq = euclidean_rvq(dim=8, num_quantizers=3, codebook_size=16, kmeans_init=False).eval()
    latents = torch.randn(500, 8)
    seed_codebooks_from_latents(rvq.layers, latents)
    first = rvq.layers[0].codebook.embed
    assert all(any(torch.equal(row, lat) for lat in latents) for row in first)   # rows of the latents
    residual = latents - first[torch.cdist(latents, first).argmin(-1)]
    second = rvq.layers[1].codebook.embed
    assert all(any(torch.allclose(row, r) for r in residual) for row in second)   # rows of the first residual
    codes = torch.stack([torch.cdist(latents, first).argmin(-1), torch.cdist(residual, second).argmin(-1)])
    assert all(len(c.unique()) >= 12 for c in codes)   # an unseeded, untrained codebook: one or a few codes
