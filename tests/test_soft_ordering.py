"""envs.soft_ordering: SOHE bins, set invariance of SoftOrdering, and the recurrent form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from envs.soft_ordering import SOHE, RecurrentSoftOrdering, SoftOrdering


def seeded(factory, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def randn(*shape, seed: int = 0, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def sohe_reference(x: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin k (1-based) of channel c at output c * n + k - 1: sigmoid(x - t_k) - sigmoid(x - t_{k+1})."""
    thresholds = [k - (n_bins + 1) / 2 for k in range(1, n_bins + 1)]
    bins = []
    for k in range(n_bins):
        upper = torch.sigmoid(x - thresholds[k])
        above = torch.sigmoid(x - thresholds[k + 1]) if k + 1 < n_bins else torch.zeros_like(x)
        bins.append(upper - above)
    return torch.stack(bins, dim=-1).flatten(-2)


@pytest.mark.parametrize("n_bins", [1, 2, 4, 7])
@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 4)])
def test_sohe_shape_and_values(shape, n_bins):
    x = randn(*shape, seed=1, dtype=torch.float64, scale=3.0)
    out = SOHE(n_bins)(x)
    assert out.shape == (*shape[:-1], shape[-1] * n_bins)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, sohe_reference(x, n_bins), rtol=0.0, atol=1e-15)


def test_sohe_one_bin_is_exactly_sigmoid():
    x = randn(4, 9, seed=2, scale=5.0)
    assert torch.equal(SOHE(1)(x), torch.sigmoid(x))


def test_sohe_thresholds_are_unit_spaced_and_centred():
    assert SOHE(4).thresholds.tolist() == [-1.5, -0.5, 0.5, 1.5]
    assert SOHE(3).thresholds.tolist() == [-1.0, 0.0, 1.0]
    assert "thresholds" not in SOHE(3).state_dict()  # fixed, not saved


@pytest.mark.parametrize("n_bins", [2, 3, 5])
def test_sohe_bins_in_unit_interval_and_sum_to_sigmoid_of_lowest_threshold(n_bins):
    x = torch.linspace(-6, 6, 241, dtype=torch.float64).unsqueeze(-1)  # one channel
    bins = SOHE(n_bins)(x)
    assert bins.shape == (241, n_bins)
    assert bool((bins > 0).all()) and bool((bins < 1).all())
    t_1 = 1 - (n_bins + 1) / 2
    torch.testing.assert_close(bins.sum(-1), torch.sigmoid(x[:, 0] - t_1), rtol=0.0, atol=1e-14)


def test_sohe_bin_k_indicates_its_interval():
    sohe = SOHE(4)  # thresholds -1.5, -0.5, 0.5, 1.5
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64).unsqueeze(-1)
    bins = sohe(x)
    # bin k (not the top one) peaks at the middle of (t_k, t_{k+1})
    peaks = x[bins[:, :3].argmax(0), 0]
    torch.testing.assert_close(peaks, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), rtol=0.0, atol=1e-12)
    # the top bin is open-ended: increasing towards 1
    assert bool((bins[1:, 3] > bins[:-1, 3]).all())
    assert float(sohe(torch.tensor([[12.0]]))[0, 3]) > 0.9999
    assert float(sohe(torch.tensor([[-12.0]])).sum()) < 1e-4  # below every threshold: almost no mass


def test_sohe_channel_major_flattening():
    x = torch.tensor([[-3.0, 0.0, 3.0]])
    out = SOHE(2)(x)
    for c in range(3):
        torch.testing.assert_close(out[:, 2 * c : 2 * c + 2], SOHE(2)(x[:, c : c + 1]), rtol=0.0, atol=0.0)


def test_sohe_gradcheck():
    x = randn(3, 4, seed=3, dtype=torch.float64, scale=2.0).requires_grad_()
    assert torch.autograd.gradcheck(SOHE(3), (x,))


@pytest.mark.parametrize("n_bins", [0, -1, 2.0, "4", None])
def test_sohe_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        SOHE(n_bins)


def test_soft_ordering_output_is_mean_of_sohe():
    layer = seeded(lambda: SoftOrdering(3, 8, 4), 4)
    x = randn(5, 6, 3, seed=5)
    out = layer(x)
    assert out.shape == (5, 32) and layer.out_features == 32
    expected = torch.stack([SOHE(4)(layer.linear(x[:, s])) for s in range(6)]).mean(0)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_soft_ordering_is_permutation_invariant():
    layer = seeded(lambda: SoftOrdering(3, 16, 4), 6)
    x = randn(4, 12, 3, seed=7, scale=2.0)
    permutation = torch.randperm(12, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(permutation, torch.arange(12))
    torch.testing.assert_close(layer(x[:, permutation]), layer(x), rtol=1e-6, atol=1e-6)
    # each set permuted differently
    mask = torch.rand(4, 12, generator=torch.Generator().manual_seed(9)) < 0.6
    mask[:, 0] = True
    per_row = torch.stack([torch.randperm(12, generator=torch.Generator().manual_seed(10 + b)) for b in range(4)])
    shuffled_x = torch.gather(x, 1, per_row.unsqueeze(-1).expand(-1, -1, 3))
    shuffled_mask = torch.gather(mask, 1, per_row)
    torch.testing.assert_close(layer(shuffled_x, shuffled_mask), layer(x, mask), rtol=1e-6, atol=1e-6)


def test_soft_ordering_mask_is_mean_over_kept_elements():
    layer = seeded(lambda: SoftOrdering(3, 8, 3), 11)
    x = randn(6, 10, 3, seed=12)
    mask = torch.rand(6, 10, generator=torch.Generator().manual_seed(13)) < 0.5
    mask[:, 3] = True  # every set non-empty
    mask[0] = True  # one full set
    out = layer(x, mask)
    for b in range(6):
        kept = x[b, mask[b]]
        torch.testing.assert_close(out[b], layer(kept[None])[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[0], layer(x[:1])[0], rtol=1e-6, atol=1e-6)
    # padding rows do not matter
    garbage = x.clone()
    garbage[~mask] = 1e3
    torch.testing.assert_close(layer(garbage, mask), out, rtol=0.0, atol=0.0)


def test_soft_ordering_gradients_flow():
    layer = SoftOrdering(3, 4, 2).double()
    x = randn(2, 5, 3, seed=14, dtype=torch.float64).requires_grad_()
    mask = torch.tensor([[True, True, False, True, False], [True] * 5])
    assert torch.autograd.gradcheck(lambda inp: layer(inp, mask), (x,))


def unroll(rso: RecurrentSoftOrdering, x: torch.Tensor) -> torch.Tensor:
    state = rso.initial_state(x.shape[0])
    for step in range(x.shape[1]):
        state = rso(state, x[:, step])
    return state


def glimpses(batch: int, steps: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """(i, j) in [-1, 1] and a value in [0, 1], like the environment's features."""
    generator = torch.Generator().manual_seed(seed)
    where = torch.rand(batch, steps, 2, generator=generator, dtype=dtype) * 2 - 1
    value = torch.rand(batch, steps, 1, generator=generator, dtype=dtype)
    return torch.cat([where, value], dim=-1)


def test_recurrent_initial_state_and_shapes():
    rso = seeded(lambda: RecurrentSoftOrdering(3, 8, 4), 15)
    assert rso.state_features == 32
    assert rso.linear.weight.shape == (8, 3 + 32)
    state = rso.initial_state(5)
    assert state.shape == (5, 32) and not state.any()
    x = glimpses(5, 1, 16)[:, 0]
    step = rso(state, x)
    torch.testing.assert_close(step, state + rso.increment(state, x), rtol=0.0, atol=0.0)
    assert bool((rso.increment(state, x) > 0).all())


def test_recurrent_init_is_order_blind_soft_ordering_times_t():
    rso = seeded(lambda: RecurrentSoftOrdering(3, 8, 4), 17)
    assert torch.equal(rso.linear.weight[:, 3:], torch.zeros(8, 32))  # state weights start at zero
    plain = SoftOrdering(3, 8, 4)
    with torch.no_grad():
        plain.linear.weight.copy_(rso.linear.weight[:, :3])
        plain.linear.bias.copy_(rso.linear.bias)
    for steps in (1, 3, 7):
        x = glimpses(6, steps, 18 + steps)
        torch.testing.assert_close(unroll(rso, x), steps * plain(x), rtol=1e-5, atol=1e-5)
        # hence order-blind
        permutation = torch.randperm(steps, generator=torch.Generator().manual_seed(steps))
        torch.testing.assert_close(unroll(rso, x[:, permutation]), unroll(rso, x), rtol=1e-5, atol=1e-5)


def test_recurrent_init_statistics():
    """The documented wide init: std ~6 on (i, j), ~10 on the value, biases in (-8, 8)."""
    rso = seeded(lambda: RecurrentSoftOrdering(3, 512, 1), 19)
    weight, bias = rso.linear.weight.detach(), rso.linear.bias.detach()
    assert float(weight[:, :2].std()) == pytest.approx(6.0, rel=0.1)
    assert float(weight[:, 2].std()) == pytest.approx(10.0, rel=0.1)
    assert float(bias.min()) >= -8.0 and float(bias.max()) <= 8.0
    assert float(bias.std()) == pytest.approx(16 / 12**0.5, rel=0.15)


def test_recurrent_with_state_weights_depends_on_order():
    rso = seeded(lambda: RecurrentSoftOrdering(3, 8, 4), 20)
    with torch.no_grad():
        nn.init.normal_(rso.linear.weight[:, 3:], std=0.5, generator=torch.Generator().manual_seed(21))
    x = glimpses(6, 5, 22)
    permutation = torch.tensor([4, 2, 0, 3, 1])
    difference = (unroll(rso, x[:, permutation]) - unroll(rso, x)).abs().amax(-1)
    assert bool((difference > 1e-3).all())


def test_recurrent_histogram_bounds():
    rso = seeded(lambda: RecurrentSoftOrdering(3, 8, 4), 23)
    with torch.no_grad():
        nn.init.normal_(rso.linear.weight[:, 3:], std=0.3, generator=torch.Generator().manual_seed(24))
    x = glimpses(16, 10, 25)
    state = rso.initial_state(16)
    for step in range(10):
        state = rso(state, x[:, step])
        t = step + 1
        assert bool((state >= 0).all()) and bool((state <= t).all())
        per_channel = state.view(16, 8, 4).sum(-1)
        assert bool((per_channel <= t + 1e-5).all())


def test_recurrent_gradients_flow():
    rso = seeded(lambda: RecurrentSoftOrdering(3, 8, 4), 26)
    x = glimpses(4, 3, 27).requires_grad_()
    unroll(rso, x).pow(2).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    grad = rso.linear.weight.grad
    assert float(grad[:, :3].abs().sum()) > 0
    # the state weights start at zero but learn: from the second glimpse on the state is non-zero
    assert float(grad[:, 3:].abs().sum()) > 0
    assert float(rso.linear.bias.grad.abs().sum()) > 0


def test_recurrent_gradcheck():
    rso = seeded(lambda: RecurrentSoftOrdering(3, 3, 2), 28).double()
    with torch.no_grad():
        nn.init.normal_(rso.linear.weight[:, 3:], std=0.5, generator=torch.Generator().manual_seed(29))
        rso.linear.weight[:, :3] /= 4  # keep the bins out of saturation
    x = glimpses(2, 3, 30, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda inp: unroll(rso, inp), (x,))


def test_recurrent_increments_of_k_alternatives_equal_one_at_a_time():
    """increments(state, x (B, K, F)) is increment(state, x[:, k]) for every k, values and gradients
    (the state's share of the linear layer is computed once per row)."""
    rso = seeded(lambda: RecurrentSoftOrdering(3, 8, 4), 31).double()
    with torch.no_grad():
        nn.init.normal_(rso.linear.weight[:, 3:], std=0.3, generator=torch.Generator().manual_seed(32))
    state = randn(5, 32, seed=33, dtype=torch.float64).abs().requires_grad_()
    x = glimpses(5, 6, 34, torch.float64).requires_grad_()
    batched = rso.increments(state, x)
    one_at_a_time = torch.stack([rso.increment(state, x[:, k]) for k in range(6)], dim=1)
    torch.testing.assert_close(batched, one_at_a_time)
    weights = randn(5, 6, 32, seed=35, dtype=torch.float64)
    inputs = [state, x, rso.linear.weight, rso.linear.bias]
    expected = torch.autograd.grad((one_at_a_time * weights).sum(), inputs)
    for got, want in zip(torch.autograd.grad((batched * weights).sum(), inputs), expected):
        torch.testing.assert_close(got, want)
