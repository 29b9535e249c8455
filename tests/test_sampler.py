"""envs.sampler: the (i, j) pixel convention, each kernel's values, padding and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from envs.sampler import SAMPLER_MODES, Sampler, action_to_pixel, pixel_to_action

# Float64 round-off of grid_sample's coordinate normalisation (i -> 2 i / 27 - 1 -> i) is ~1e-15.
EXACT = dict(rtol=0.0, atol=1e-12)


def random_images(batch: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 28, 28, generator=generator, dtype=dtype)


def all_integer_points(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    return rows, cols, torch.stack([rows, cols], dim=-1).to(dtype)


def keys_cubic(x: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution kernel."""
    x = x.abs()
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def separable_reference(images: torch.Tensor, coords: torch.Tensor, kernel) -> torch.Tensor:
    """``sum_pq k(i - p) k(j - q) image[p, q]`` over the image's pixels (zero outside)."""
    lattice = torch.arange(28, dtype=images.dtype)
    w_i = kernel(coords[:, :1] - lattice)
    w_j = kernel(coords[:, 1:] - lattice)
    return torch.einsum("bp,bpq,bq->b", w_i, images, w_j)


def triangle(x: torch.Tensor) -> torch.Tensor:
    return (1.0 - x.abs()).clamp_min(0.0)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_points_read_the_pixel(mode, seed):
    image = random_images(1, seed)[0]
    rows, cols, coords = all_integer_points()
    values = Sampler(mode)(image.expand(len(coords), 28, 28), coords)
    expected = image[rows, cols]  # (i, j) = (row, column)
    if mode == "nearest":
        assert torch.equal(values, expected)
    else:
        torch.testing.assert_close(values, expected, **EXACT)


def test_integer_points_float32_images():
    image = random_images(1, 3, torch.float32)[0]
    rows, cols, coords = all_integer_points(torch.float32)
    for mode in ("nearest", "bilinear", "bicubic"):
        values = Sampler(mode)(image.expand(len(coords), 28, 28), coords)
        torch.testing.assert_close(values, image[rows, cols], rtol=0.0, atol=1e-5)


def test_row_is_first_coordinate():
    image = torch.zeros(1, 28, 28, dtype=torch.float64)
    image[0, 3, 20] = 1.0
    for mode in SAMPLER_MODES[:3]:
        sampler = Sampler(mode)
        assert float(sampler(image, torch.tensor([[3.0, 20.0]], dtype=torch.float64))) == pytest.approx(1.0, abs=1e-12)
        assert float(sampler(image, torch.tensor([[20.0, 3.0]], dtype=torch.float64))) == pytest.approx(0.0, abs=1e-12)


def test_bilinear_half_integer_points_are_neighbour_means():
    images = random_images(2, 4)
    sampler = Sampler("bilinear")
    i, j = torch.meshgrid(torch.arange(27), torch.arange(27), indexing="ij")
    i, j = i.flatten(), j.flatten()
    fi, fj = i.double(), j.double()
    for image in images:
        batch = image.expand(len(i), 28, 28)
        down = sampler(batch, torch.stack([fi + 0.5, fj], -1))
        torch.testing.assert_close(down, (image[i, j] + image[i + 1, j]) / 2, **EXACT)
        right = sampler(batch, torch.stack([fi, fj + 0.5], -1))
        torch.testing.assert_close(right, (image[i, j] + image[i, j + 1]) / 2, **EXACT)
        centre = sampler(batch, torch.stack([fi + 0.5, fj + 0.5], -1))
        mean4 = (image[i, j] + image[i + 1, j] + image[i, j + 1] + image[i + 1, j + 1]) / 4
        torch.testing.assert_close(centre, mean4, **EXACT)


def test_nearest_rounds_half_to_even():
    image = random_images(1, 5)[0]
    half = torch.arange(27, dtype=torch.float64) + 0.5
    coords = torch.stack([half, torch.full_like(half, 7.0)], -1)
    values = Sampler("nearest")(image.expand(27, 28, 28), coords)
    rows = torch.tensor([round(k) for k in half.tolist()])  # Python rounds half to even
    assert rows[:6].tolist() == [0, 2, 2, 4, 4, 6]
    assert torch.equal(values, image[rows, 7])


@pytest.mark.parametrize(("mode", "kernel"), [("bilinear", triangle), ("bicubic", keys_cubic)])
def test_matches_reference_kernel_at_random_points(mode, kernel):
    images = random_images(64, 6)
    coords = torch.rand(64, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 31 - 2
    torch.testing.assert_close(Sampler(mode)(images, coords), separable_reference(images, coords, kernel), **EXACT)


@pytest.mark.parametrize("sigma", [0.5, 2.0, 3.7])
def test_gaussian_matches_direct_sum(sigma):
    images = random_images(3, 8)
    coords = torch.tensor([[13.2, 4.7], [0.0, 27.0], [-3.0, 30.5]], dtype=torch.float64)
    values = Sampler("gaussian", sigma=sigma)(images, coords)
    for b in range(3):
        i, j = coords[b].tolist()
        expected = 0.0
        for p in range(28):
            for q in range(28):
                weight = math.exp(-((p - i) ** 2 + (q - j) ** 2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
                expected += weight * float(images[b, p, q])
        assert float(values[b]) == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_gaussian_normalised_over_infinite_lattice():
    ones = torch.ones(2, 28, 28, dtype=torch.float64)
    sigma = 2.0
    values = Sampler("gaussian", sigma=sigma)(ones, torch.tensor([[13.5, 13.5], [0.0, 0.0]], dtype=torch.float64))
    assert float(values[0]) == pytest.approx(1.0, abs=1e-6)  # weights sum to ~1 well inside the image
    # at the corner, the zero background outside takes its share: one-sided lattice sums per axis
    one_side = sum(math.exp(-(p**2) / (2 * sigma**2)) for p in range(28)) / (math.sqrt(2 * math.pi) * sigma)
    assert float(values[1]) == pytest.approx(one_side**2, rel=1e-10)
    assert 0.3 < float(values[1]) < 0.4


def test_zero_padding_outside_the_image():
    image = random_images(1, 9)[0]
    j = torch.arange(28, dtype=torch.float64)
    batch = image.expand(28, 28, 28)

    def read(mode, i):
        return Sampler(mode)(batch, torch.stack([torch.full_like(j, i), j], -1))

    for mode in ("nearest", "bilinear", "bicubic"):
        torch.testing.assert_close(read(mode, -2.0), torch.zeros(28, dtype=torch.float64), **EXACT)
        torch.testing.assert_close(read(mode, 29.0), torch.zeros(28, dtype=torch.float64), **EXACT)
    torch.testing.assert_close(read("bilinear", -0.5), image[0] / 2, **EXACT)
    torch.testing.assert_close(read("bilinear", 27.5), image[27] / 2, **EXACT)
    torch.testing.assert_close(read("bilinear", -0.25), image[0] * 0.75, **EXACT)
    assert torch.equal(read("nearest", -0.4), image[0])
    assert torch.equal(read("nearest", -0.6), torch.zeros(28, dtype=torch.float64))
    assert torch.equal(read("nearest", 27.4), image[27])
    far = Sampler("gaussian", sigma=2.0)(image[None], torch.tensor([[-40.0, 60.0]], dtype=torch.float64))
    assert 0.0 <= float(far) < 1e-30


def fractional_points(batch: int, seed: int, low: int = 2, high: int = 25) -> torch.Tensor:
    """Points whose fractional parts stay in [0.2, 0.8] (away from the kernels' knots)."""
    generator = torch.Generator().manual_seed(seed)
    whole = torch.randint(low, high, (batch, 2), generator=generator).double()
    return whole + 0.2 + 0.6 * torch.rand(batch, 2, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "gaussian"])
def test_gradcheck_wrt_coords(mode):
    images = random_images(6, 10)
    coords = fractional_points(6, 11).requires_grad_()
    sampler = Sampler(mode, sigma=1.5)
    assert torch.autograd.gradcheck(lambda c: sampler(images, c), (coords,))


def test_gradcheck_bicubic_and_gaussian_at_integer_points():
    """Both kernels are C1, so the gradient exists at pixel centres too."""
    images = random_images(4, 12)
    coords = torch.tensor([[5.0, 9.0], [12.0, 12.0], [20.0, 3.0], [1.0, 26.0]], dtype=torch.float64).requires_grad_()
    for mode in ("bicubic", "gaussian"):
        sampler = Sampler(mode)
        assert torch.autograd.gradcheck(lambda c, sampler=sampler: sampler(images, c), (coords,))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "gaussian"])
def test_gradcheck_wrt_images(mode):
    images = random_images(2, 13).requires_grad_()
    coords = fractional_points(2, 14)
    sampler = Sampler(mode)
    assert torch.autograd.gradcheck(lambda x: sampler(x, coords), (images,), fast_mode=True)


def test_bilinear_gradient_is_the_finite_difference_of_pixels():
    image = random_images(1, 15)
    coords = torch.tensor([[10.3, 17.6]], dtype=torch.float64, requires_grad=True)
    Sampler("bilinear")(image, coords).sum().backward()
    im = image[0]
    # d/di of the bilinear interpolant at fractional column weight 0.6
    d_i = 0.4 * (im[11, 17] - im[10, 17]) + 0.6 * (im[11, 18] - im[10, 18])
    d_j = 0.7 * (im[10, 18] - im[10, 17]) + 0.3 * (im[11, 18] - im[11, 17])
    torch.testing.assert_close(coords.grad[0], torch.stack([d_i, d_j]), **EXACT)


def test_nearest_gradient_is_zero():
    images = random_images(8, 16)
    coords = fractional_points(8, 17, 0, 27).requires_grad_()
    values = Sampler("nearest")(images, coords)
    assert values.abs().sum() > 0
    values.sum().backward()
    assert coords.grad is not None
    assert torch.equal(coords.grad, torch.zeros_like(coords))


def test_gaussian_gradient_reaches_into_flat_background():
    image = torch.zeros(1, 28, 28, dtype=torch.float64)
    image[0, 10:15, 10:15] = 1.0  # ink block, columns 10..14
    coords = torch.tensor([[12.3, 7.4]], dtype=torch.float64)  # 2.6 pixels left of the ink

    bilinear = coords.clone().requires_grad_()
    value = Sampler("bilinear")(image, bilinear)
    value.sum().backward()
    assert float(value.detach()) == 0.0
    assert torch.equal(bilinear.grad, torch.zeros_like(bilinear))  # flat background: no signal

    gaussian = coords.clone().requires_grad_()
    value = Sampler("gaussian", sigma=2.0)(image, gaussian)
    value.sum().backward()
    assert float(value.detach()) > 0.0
    assert float(gaussian.grad[0, 1]) > 1e-3  # points right, towards the ink
    assert abs(float(gaussian.grad[0, 0])) < float(gaussian.grad[0, 1])  # row 12.3 is near the block's middle row 12


def test_action_pixel_maps():
    actions = torch.tensor([-1.0, 1.0, 0.0])
    assert action_to_pixel(actions).tolist() == [0.0, 27.0, 13.5]
    assert pixel_to_action(torch.tensor([0.0, 27.0, 13.5])).tolist() == [-1.0, 1.0, 0.0]
    pair = action_to_pixel(torch.tensor([[-1.0, 1.0]]))
    assert pair.shape == (1, 2) and pair.tolist() == [[0.0, 27.0]]

    generator = torch.Generator().manual_seed(18)
    a = torch.rand(100, 2, generator=generator, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(pixel_to_action(action_to_pixel(a)), a, rtol=0.0, atol=1e-15)
    pixels = torch.rand(100, 2, generator=generator, dtype=torch.float64) * 27
    torch.testing.assert_close(action_to_pixel(pixel_to_action(pixels)), pixels, rtol=0.0, atol=1e-13)
    # float32 round trip of every integer pixel lands within 1e-5 of it
    integers = torch.arange(28, dtype=torch.float32)
    assert float((action_to_pixel(pixel_to_action(integers)) - integers).abs().max()) < 1e-5


@pytest.mark.parametrize("mode", ["linear", "Bilinear", "", "area"])
def test_unknown_mode_raises(mode):
    with pytest.raises(ValueError, match="valid samplers") as error:
        Sampler(mode)
    for valid in SAMPLER_MODES:
        assert repr(valid) in str(error.value)


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), "2", None])
def test_bad_sigma_raises(sigma):
    with pytest.raises(ValueError, match="sigma"):
        Sampler("gaussian", sigma=sigma)


def test_bad_shapes_raise():
    sampler = Sampler()
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        sampler(torch.zeros(2, 28, 28), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        sampler(torch.zeros(2, 28, 28), torch.zeros(3, 2))
    with pytest.raises(ValueError):
        sampler(torch.zeros(2, 1, 28, 28), torch.zeros(2, 2))


def test_repr_names_mode():
    assert repr(Sampler("bilinear")) == "Sampler(mode='bilinear')"
    assert repr(Sampler("gaussian", sigma=1.5)) == "Sampler(mode='gaussian', sigma=1.5)"


def test_sampler_on_real_digit_matches_pixels(test_split):
    images = test_split.images[:4].double() / 255.0
    rows, cols, coords = all_integer_points()
    for image in images:
        values = Sampler("bilinear")(image.expand(len(coords), 28, 28), coords)
        torch.testing.assert_close(values, image[rows, cols], **EXACT)
    assert np.isclose(float(images.max()), 1.0)


def test_straight_through_reads_nearest_and_takes_bilinear_gradient():
    images = random_images(4, 21)
    coords = fractional_points(4, 22).requires_grad_()
    straight = Sampler("nearest", gradient="bilinear")
    values = straight(images, coords)
    assert torch.equal(values.detach(), Sampler("nearest")(images, coords).detach())
    (grad,) = torch.autograd.grad(values.sum(), coords)
    (expected,) = torch.autograd.grad(Sampler("bilinear")(images, coords).sum(), coords)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    assert grad.abs().sum() > 0
    assert straight.name == "nearest+bilinear"
    with pytest.raises(ValueError, match="sampler gradient"):
        Sampler("nearest", gradient="box")


@pytest.mark.parametrize("gradient", [None, "bilinear"])
@pytest.mark.parametrize("mode", SAMPLER_MODES)
def test_points_read_each_image_k_times_as_the_repeated_image_does(mode, gradient):
    """``Sampler.points``: the floats and gradients of ``K`` separate reads, without the K copies."""
    images = random_images(6, 31, dtype=torch.float32)
    coords = (torch.rand(6, 5, 2, generator=torch.Generator().manual_seed(32)) * 27).requires_grad_()
    coords.data[:, :2] = coords.data[:, :2].round()  # pixel centres too
    sampler = Sampler(mode, gradient=gradient)
    values = sampler.points(images, coords)
    repeated = sampler(images.repeat_interleave(5, dim=0), coords.reshape(-1, 2)).view(6, 5)
    assert values.shape == (6, 5) and torch.equal(values, repeated)
    weights = torch.rand(6, 5)
    (grad,) = torch.autograd.grad((values * weights).sum(), coords)
    (expected,) = torch.autograd.grad((repeated * weights).sum(), coords)
    assert torch.equal(grad, expected)
    for bad in (coords[:, 0], coords[:4], coords[..., :1]):
        with pytest.raises(ValueError, match=r"coords \(B, K, 2\)"):
            sampler.points(images, bad)
