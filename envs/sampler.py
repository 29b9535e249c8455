"""Read image values at continuous pixel coordinates, differentiably.

Coordinate convention (used everywhere in the project)
------------------------------------------------------
A glimpse location is ``(i, j)`` in **pixel units**: ``i`` is the row (0 = top), ``j`` the column
(0 = left), and the integer point ``(i, j)`` is the centre of pixel ``image[i, j]``. Valid locations
span ``[0, 27] x [0, 27]``; outside the image the picture is zero (black background). Agents act in
normalised coordinates ``a in [-1, 1]^2`` with ``(i, j) = (a + 1) / 2 * 27``
(:func:`action_to_pixel`); this is exactly ``grid_sample``'s ``align_corners=True`` convention, so
``a`` with its two components swapped is the ``(x, y)`` sampling grid.

Kernels
-------
=========== =============================================================== ======================
``nearest``  the value of the closest pixel (rounding half to even): one real pixel, zero gradient
``bilinear`` linear interpolation of the 4 surrounding pixels (default for training)
``bicubic``  cubic convolution (Keys, a = -0.75) over 4x4 pixels; exact at integer points
``gaussian`` a Gaussian-weighted average, std ``sigma`` pixels, over the whole image: a blurred
             read whose gradient is non-zero in flat background, where the others give zero
=========== =============================================================== ======================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import IMAGE_SIZE

SAMPLER_MODES = ("nearest", "bilinear", "bicubic", "gaussian")

_MAX_INDEX = IMAGE_SIZE - 1


def action_to_pixel(action: torch.Tensor) -> torch.Tensor:
    """Map normalised actions ``a in [-1, 1]`` to pixel coordinates ``(a + 1) / 2 * 27`` (same shape)."""
    return (action + 1.0) * (_MAX_INDEX / 2.0)


def pixel_to_action(coords: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`action_to_pixel`: ``a = 2 * coords / 27 - 1``."""
    return coords * (2.0 / _MAX_INDEX) - 1.0


def pixel_centres(device: torch.device | str | None = None) -> torch.Tensor:
    """The 784 pixel centres ``(i, j)`` in pixel units, row-major (row ``k // 28``, column ``k % 28``): ``(784, 2)`` float."""
    rows, cols = torch.meshgrid(torch.arange(IMAGE_SIZE), torch.arange(IMAGE_SIZE), indexing="ij")
    return torch.stack([rows, cols], dim=-1).reshape(-1, 2).float().to(device)


class Sampler:
    """Batched, differentiable read-out of one value per image at continuous coordinates.

    ``values = sampler(images, coords)`` with ``images`` of shape ``(B, 28, 28)`` (float, any scale;
    the environment passes grey levels in ``[0, 1]``) and ``coords`` of shape ``(B, 2)`` holding
    ``(i, j)`` in pixel units; ``values`` has shape ``(B,)`` and is differentiable with respect to
    ``coords`` (and ``images``) for every mode except ``nearest``, whose gradient is zero.

    :param mode: one of :data:`SAMPLER_MODES`.
    :param sigma: standard deviation in pixels of the ``gaussian`` kernel (ignored by other modes).
    :param gradient: optional straight-through estimator: the forward value is ``mode``'s, the
        gradient that of the kernel named here, ``v = v_mode + (v_grad - stopgrad(v_grad))``. With
        ``Sampler("nearest", gradient="bilinear")`` training reads exactly the one real pixel that
        evaluation reads, yet the locations still get a gradient.
    """

    def __init__(self, mode: str = "bilinear", sigma: float = 2.0, gradient: str | None = None) -> None:
        for name, value in (("sampler", mode), ("sampler gradient", gradient or mode)):
            if value not in SAMPLER_MODES:
                raise ValueError(f"Unknown {name} {value!r}; valid samplers are {list(SAMPLER_MODES)}.")
        if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sampler sigma must be a positive finite number of pixels, got {sigma!r}.")
        self.mode = mode
        self.sigma = float(sigma)
        self.gradient = gradient if gradient != mode else None

    def __repr__(self) -> str:
        extra = f", sigma={self.sigma}" if "gaussian" in (self.mode, self.gradient) else ""
        extra += f", gradient={self.gradient!r}" if self.gradient else ""
        return f"Sampler(mode={self.mode!r}{extra})"

    @property
    def name(self) -> str:
        """``mode``, or ``mode+gradient`` for a straight-through sampler (e.g. ``nearest+bilinear``)."""
        return f"{self.mode}+{self.gradient}" if self.gradient else self.mode

    def __call__(self, images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        if images.dim() != 3 or coords.shape != (images.shape[0], 2):
            raise ValueError(
                f"Sampler expects images (B, H, W) and coords (B, 2); got {tuple(images.shape)} and "
                f"{tuple(coords.shape)}."
            )
        return self._straight_through(images, coords)

    def points(self, images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``K`` reads of each image: ``images`` ``(B, H, W)``, ``coords`` ``(B, K, 2)`` -> ``(B, K)``, what
        the sampler gives at each ``(image b, coords[b, k])``, without copying each image ``K`` times
        (``grid_sample`` reads the ``K`` locations of an image in one pass; the ``gaussian`` kernel, a
        product of per-location weights, reads the image repeated)."""
        if images.dim() != 3 or coords.dim() != 3 or coords.shape[0] != images.shape[0] or coords.shape[2] != 2:
            raise ValueError(
                f"Sampler.points expects images (B, H, W) and coords (B, K, 2); got {tuple(images.shape)} and "
                f"{tuple(coords.shape)}."
            )
        batch, k = coords.shape[:2]
        if "gaussian" in (self.mode, self.gradient):
            return self(images.repeat_interleave(k, dim=0), coords.reshape(-1, 2)).view(batch, k)
        return self._straight_through(images, coords)

    def _straight_through(self, images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``mode``'s values, with ``gradient``'s kernel's gradient when one is set (see the class)."""
        values = self._read(self.mode, images, coords)
        if self.gradient is None:
            return values
        surrogate = self._read(self.gradient, images, coords)
        return values.detach() + (surrogate - surrogate.detach())

    def _read(self, mode: str, images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``mode``'s reads at ``coords`` ``(B, 2)`` (one per image, ``-> (B,)``) or ``(B, K, 2)`` (``K`` per
        image, ``-> (B, K)``; not ``gaussian``)."""
        if mode == "gaussian":
            return self._gaussian(images, coords)
        height, width = images.shape[-2:]
        # grid_sample wants (x, y) = (column, row), normalised with align_corners=True; the K reads of an
        # image are the K rows of its one-column grid.
        scale = coords.new_tensor([2.0 / (height - 1), 2.0 / (width - 1)])
        grid = (coords * scale - 1.0).flip(-1).view(images.shape[0], -1, 1, 2)
        values = F.grid_sample(images.unsqueeze(1), grid, mode=mode, padding_mode="zeros", align_corners=True)
        return values.view(coords.shape[:-1])

    def _gaussian(self, images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian read: ``v = sum_pq w_i(p) w_j(q) image[p, q]``.

        ``w_i(p) = exp(-(p - i)^2 / (2 sigma^2)) / (sqrt(2 pi) sigma)`` is normalised over the infinite
        lattice, so the zero background outside the image weighs in as it should.
        """
        height, width = images.shape[-2:]
        norm = 1.0 / (math.sqrt(2.0 * math.pi) * self.sigma)
        rows = torch.arange(height, device=images.device, dtype=images.dtype)
        cols = torch.arange(width, device=images.device, dtype=images.dtype)
        # Weights are cut to exactly 0 beyond 7.7 sigma (exponent < -30, weight < 1e-13): further out
        # float32 goes denormal, and denormal arithmetic is very slow on the CPU.
        w_i = self._weights(rows[None, :] - coords[:, :1]) * norm  # (B, H)
        w_j = self._weights(cols[None, :] - coords[:, 1:]) * norm  # (B, W)
        return torch.einsum("bp,bpq,bq->b", w_i, images, w_j)

    def _weights(self, offsets: torch.Tensor) -> torch.Tensor:
        exponent = -0.5 * (offsets / self.sigma) ** 2
        return torch.where(exponent > -30.0, torch.exp(exponent.clamp_min(-30.0)), 0.0)
