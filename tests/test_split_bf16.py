"""fp32 products as bf16 GEMMs of split operands (audiocodec.nn.split_bf16): the parts sum to the value, the
split survives torch.compile, and the products are as accurate as fp32's (3 parts) or to ~2^-16 (2 parts)."""
import pytest
import torch
import torch.nn.functional as F

from audiocodec.nn.split_bf16 import (PRODUCTS, parts_side_by_side, split_bf16, split_bf16_linear, split_input_operand,
                                      split_weight_operand)


def test_parts_sum_to_the_value():
    t = torch.randn(10000, generator=torch.Generator().manual_seed(0)) * torch.logspace(-30, 30, 10000)
    for parts, tol in ((1, 2 ** -8), (2, 2 ** -16)):
        split = split_bf16(t, parts)
        assert all(p.dtype == torch.bfloat16 for p in split)
        assert ((sum(p.float() for p in split) - t).abs() <= tol * t.abs()).all()
    assert torch.equal(sum(p.float() for p in split_bf16(t, 3)), t)   # 3 x 8 bits hold fp32's 24


def test_split_survives_compile():
    """The parts are cut on the value's bits: inductor, which may fuse a bf16 round trip away, computes the same
    parts as eager (a fused-away cast would leave the low parts zero)."""
    t = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(lambda x: split_bf16(x, 3), dynamic=False)
    for eager, comp in zip(split_bf16(t, 3), compiled(t)):
        assert torch.equal(eager, comp)


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_input_operand_is_the_parts_side_by_side(parts):
    """The left operand is the input's parts in the order of PRODUCTS (the weight operand's order), eager and
    compiled with a producer fused in (the selection over a broadcast that replaced a concatenation)."""
    x = torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(3))
    def side_by_side(t):
        xs = split_bf16(t, parts)
        return torch.cat([xs[i] for i, _ in PRODUCTS[parts]], dim=-1)
    assert split_input_operand(x, parts).dtype == torch.bfloat16
    assert torch.equal(split_input_operand(x, parts), side_by_side(x))
    compiled = torch.compile(lambda t: split_input_operand(t * 3 + 1, parts), dynamic=False)
    assert torch.equal(compiled(x), side_by_side(x * 3 + 1))
    ws = split_bf16(x[0], parts)   # the weight operand: the parts in the products' order of the right side
    assert torch.equal(split_weight_operand(x[0], parts), torch.cat([ws[j] for _, j in PRODUCTS[parts]], dim=-1))
    if parts == 3:   # any slot order, levels left out too
        xs = split_bf16(x, 3)
        assert torch.equal(parts_side_by_side(x, 3, [2, 0]), torch.cat([xs[2], xs[0]], dim=-1))


def test_input_operand_takes_no_host_data():
    """The operand is made from the input alone: no tensor built from host values (copied to a CUDA device, it
    would break the CUDA graph capture of an eager caller such as the codebook search)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))
    with Record():
        split_input_operand(torch.randn(4, 16), 3)
    assert seen and not [f for f in seen if "lift_fresh" in str(f)]   # what torch.tensor(values) dispatches


@pytest.mark.parametrize("parts,worst", [(3, 2.0), (2, 40.0)])
def test_linear_is_as_accurate_as_fp32(parts, worst):
    """Error against an fp64 product: 3 parts within 2x fp32's own (F.linear), 2 parts within ~2^-16."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 250, 768, generator=g) * 3
    w, b = torch.randn(2304, 768, generator=g) * 0.02, torch.randn(2304, generator=g)
    exact = F.linear(x.double(), w.double(), b.double())
    err = lambda y: ((y.double() - exact).abs().max() / exact.abs().max()).item()  # noqa: E731
    y = split_bf16_linear(x, split_weight_operand(w, parts), b, parts)
    assert y.shape == (3, 250, 2304) and y.dtype == torch.float32
    assert err(y) <= worst * err(F.linear(x, w, b)) and err(y) < 2 ** -16
