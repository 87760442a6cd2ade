import numpy as np
import pytest
import torch

from avatar.core.host_copy import host_batches


def _batches(device: str, n: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3 + i, 8, 9, 3), generator=g, dtype=torch.uint8).to(device) for i in range(n)]


def test_cpu_batches_come_back_in_order_and_unchanged():
    batches = _batches("cpu")
    got = list(host_batches(iter(batches)))
    assert len(got) == len(batches)
    for a, b in zip(got, batches):
        assert isinstance(a, np.ndarray) and np.array_equal(a, b.numpy())


def test_batch_i_is_handed_out_only_after_batch_i_plus_1_was_asked_for_on_cuda_only():
    asked = []

    def produce(device):
        for i, t in enumerate(_batches(device, 3)):
            asked.append(i)
            yield t

    it = host_batches(produce("cpu"))
    next(it)
    assert asked == [0]  # CPU tensors need no overlap: nothing is produced ahead
    if torch.cuda.is_available():
        asked.clear()
        it = host_batches(produce("cuda"))
        next(it)
        assert asked == [0, 1]


@pytest.mark.gpu
def test_cuda_batches_equal_a_plain_copy_while_the_producer_reuses_memory():
    """Every batch is made, copied, dropped and its memory reused by the next batch's work: the pinned copies must
    still hold what each batch was when it was made (the side stream's copy is ordered after the producer)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    expected = []

    def produce():
        for i in range(8):
            big = torch.full((64, 512, 512, 3), i, dtype=torch.uint8, device="cuda")
            big[:, ::7] = (i * 31) % 256
            out = big.permute(0, 2, 1, 3)[:, :, :300]  # non-contiguous view
            expected.append(out.cpu().numpy())
            torch.cuda._sleep(2_000_000)  # keep the main stream busy so the copies really run alongside
            yield out
            del big, out

    got = list(host_batches(produce()))
    assert len(got) == 8
    for a, b in zip(got, expected):
        assert np.array_equal(a, b)
