"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def native_cpu_convs():
    """oneDNN re-plans every new conv shape (seconds on a small shared CPU); PyTorch's native kernels are
    fast for tiny models. The results are the same either way."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
