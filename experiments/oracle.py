"""The best non-adaptive lookup-table classifier on a few pixel positions.

For chosen pixel positions ``p_1..p_K`` every grey level ``v`` (0..255) is quantised into one of
``levels`` bins, ``q = floor(v * levels / 256)`` (``levels = 256`` keeps the exact grey level). The
*code* of an image is the tuple ``(q(p_1), ..., q(p_K))``. On the fitting split the table counts the
class histogram of every code and predicts its majority class. This is the Bayes-optimal rule for
the empirical distribution of the fitting split, so its in-sample accuracy is the best any
classifier that sees only those (quantised) pixels can reach there; on another split it is an
ordinary held-out classifier.

Conventions (the same everywhere in this module):

* **Ties** between classes of a code go to the smallest class index (``torch.argmax`` returns the
  first maximum). Ties do not change in-sample accuracy: a code contributes its largest class
  count whichever of the tied classes is predicted.
* **Unseen codes** (a held-out image whose code never occurs on the fitting split) are predicted as
  the fitting split's overall majority class (again smallest index on ties).
* **Table rows** are the distinct codes in lexicographic order of the tuple, which is the order of
  the mixed-radix joint code ``q(p_1) * levels**(K-1) + ... + q(p_K)``.
* **Search ranking**: more in-sample correct first; equal counts go to the smaller flat index
  (for pairs, the smaller ``(a, b)`` with ``a < b``, lexicographically).

Images may be ``(N, 28, 28)`` (MNIST) or any ``(N, ...)``: they are flattened row-major to
``(N, P)`` and positions are flat indices ``0..P-1``.

Run it::

    python experiments/oracle.py --pixels 406 409                 # flat row-major indices (i * 28 + j)
    python experiments/oracle.py --pixels 14,14 14,17 --levels 4  # (i, j) pairs, 4 grey-level bins
    python experiments/oracle.py --search 1                       # best single pixel
    python experiments/oracle.py --search 2 --json runs/oracle/pair.json   # best pair

The results: docs/studies/oracle-pairs.md (``experiments/results/studies/oracle_pairs.json``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from agents.cli import plain_text, run_main, user_errors
from envs.config import resolve_device
from envs.data import IMAGE_SIZE, NUM_CLASSES, load_mnist

#: Pixels of an MNIST image.
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
#: Grey levels of a ``uint8`` image.
GREY_LEVELS = 256
#: Search sizes supported by :func:`search`.
SEARCH_SIZES = (1, 2)
#: Fitting splits: held-out is the other split (none for ``"all"``).
FIT_SPLITS = ("train", "test", "all")
#: Pair-search algorithms (both exact; see :func:`pair_correct`).
PAIR_METHODS = ("sparse", "dense")

#: Elements (int64) one chunk of the dense counting may hold at once: bounds memory to ~ 8 x 2**24 B.
DENSE_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def check_levels(levels: Any) -> int:
    """``levels`` as an ``int`` in ``1..256``, else a ``ValueError`` saying what to pass."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 1 <= levels <= GREY_LEVELS:
        raise ValueError(
            f"levels must be an integer in 1..{GREY_LEVELS} (number of grey-level bins; {GREY_LEVELS} = "
            f"exact grey level), got {levels!r}; pass e.g. --levels 256 or --levels 16."
        )
    return int(levels)


def check_search_size(k: Any) -> int:
    """``k`` as an ``int`` in :data:`SEARCH_SIZES`, else a ``ValueError`` saying what to pass."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) not in SEARCH_SIZES:
        raise ValueError(
            f"search size K must be 1 or 2 (number of positions searched exhaustively), got {k!r}; "
            f"K >= 3 is not supported (784 choose 3 is ~80 million triples). Pass --search 1 or --search 2."
        )
    return int(k)


def check_positions(positions: Sequence[int], num_pixels: int = NUM_PIXELS) -> list[int]:
    """Validate flat pixel indices: non-empty, integers in ``0..num_pixels-1``, no repeats."""
    positions = list(positions)
    if not positions:
        raise ValueError("No pixel positions given; pass at least one, e.g. --pixels 406 or --pixels 14,14.")
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
            raise ValueError(
                f"Pixel position {p!r} is not an integer; pass a flat index like 406 or a pair like 14,14."
            )
        if not 0 <= p < num_pixels:
            side = int(round(num_pixels**0.5))
            pair_hint = f" or an (i, j) pair with 0 <= i, j < {side}" if side * side == num_pixels else ""
            raise ValueError(
                f"Pixel index {p} is out of range: flat indices run 0..{num_pixels - 1} (row-major); "
                f"pass an index in 0..{num_pixels - 1}{pair_hint}."
            )
    seen: set[int] = set()
    for p in positions:
        if p in seen:
            raise ValueError(f"Pixel {p} is listed twice; list each position once.")
        seen.add(p)
    return [int(p) for p in positions]


def parse_pixel(spec: str | int, size: int = IMAGE_SIZE) -> int:
    """A flat index from ``"406"`` or an ``(i, j)`` pair ``"14,14"`` (row i, column j) on a ``size`` square."""
    text = str(spec).strip().strip("()")
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ValueError(
            f"Cannot read pixel {spec!r}; pass a flat row-major index like 406 or a pair i,j like 14,14."
        ) from None
    if len(numbers) == 1:
        return check_positions(numbers, size * size)[0]
    if len(numbers) == 2:
        i, j = numbers
        if not (0 <= i < size and 0 <= j < size):
            raise ValueError(
                f"Pixel ({i}, {j}) is out of range: row i and column j must be in 0..{size - 1}; "
                f"pass e.g. 14,14 (or a flat index 0..{size * size - 1})."
            )
        return i * size + j
    raise ValueError(f"Cannot read pixel {spec!r}: give one number (flat index) or two (i,j), like 406 or 14,14.")


def parse_pixels(specs: Sequence[str | int], size: int = IMAGE_SIZE) -> list[int]:
    """Flat indices of several pixel specs (see :func:`parse_pixel`), checked for repeats."""
    return check_positions([parse_pixel(spec, size) for spec in specs], size * size)


def to_ij(position: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """``(row, column)`` of a flat row-major index."""
    return divmod(int(position), size)


# --------------------------------------------------------------------------------------------------
# Quantisation and the lookup table
# --------------------------------------------------------------------------------------------------


def quantise(images: torch.Tensor, levels: int) -> torch.Tensor:
    """``uint8`` bins ``floor(v * levels / 256)`` in ``0..levels-1``, flattened to ``(N, P)``.

    With ``levels = 2`` grey levels 0..127 go to bin 0 and 128..255 to bin 1; in general bin ``q``
    holds the grey levels ``v`` with ``q * 256 <= v * levels < (q + 1) * 256``.
    """
    levels = check_levels(levels)
    if images.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 grey levels 0..255, got dtype {images.dtype}; pass load_mnist(...).images."
        )
    flat = images.reshape(images.shape[0], -1)
    if levels == GREY_LEVELS:
        return flat
    return ((flat.to(torch.int32) * levels) // GREY_LEVELS).to(torch.uint8)


def _check_labels(labels: torch.Tensor, n: int) -> torch.Tensor:
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the images, got {tuple(labels.shape)}.")
    labels = labels.long()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ValueError(f"labels must be classes 0..{NUM_CLASSES - 1}.")
    return labels


def majority_class(labels: torch.Tensor) -> int:
    """The most frequent class of ``labels`` (smallest class on ties; 0 when empty)."""
    return int(torch.bincount(labels.long(), minlength=NUM_CLASSES).argmax())


@dataclass(frozen=True)
class LookupTable:
    """A fitted table: one row per code seen on the fitting split.

    :param positions: flat pixel indices, in the order that forms the code.
    :param levels: grey-level bins per pixel.
    :param codes: ``uint8 (U, K)``, the distinct codes, in lexicographic (= joint-code) order.
    :param counts: ``int64 (U, 10)``, class histogram of each code on the fitting split.
    :param majority: ``int64 (U,)``, predicted class of each code (smallest class on ties).
    :param fallback: class predicted for codes not in the table (the fitting split's majority).
    """

    positions: tuple[int, ...]
    levels: int
    codes: torch.Tensor
    counts: torch.Tensor
    majority: torch.Tensor
    fallback: int

    @property
    def in_sample_correct(self) -> int:
        """Images of the fitting split the table classifies correctly: ``sum_code max_class count``."""
        return int(self.counts.amax(dim=1).sum())

    def joint_codes(self) -> torch.Tensor:
        """``int64 (U,)``: ``sum_k q_k * levels**(K-1-k)`` per row (only when it fits in 63 bits)."""
        if self.levels ** len(self.positions) >= 2**63:
            raise ValueError("The joint code does not fit in int64 for this many positions; use .codes (tuples).")
        code = torch.zeros(self.codes.shape[0], dtype=torch.int64, device=self.codes.device)
        for k in range(len(self.positions)):
            code = code * self.levels + self.codes[:, k].long()
        return code

    def lookup(self, images: torch.Tensor) -> torch.Tensor:
        """``int64 (N,)``: the table row of each image's code, ``-1`` where the code is unseen."""
        query = quantise(images, self.levels)[:, list(self.positions)]
        both = torch.cat([self.codes, query])
        _, inverse = torch.unique(both, dim=0, return_inverse=True)
        row_of_unique = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.int64, device=both.device)
        row_of_unique[inverse[: self.codes.shape[0]]] = torch.arange(self.codes.shape[0], device=both.device)
        return row_of_unique[inverse[self.codes.shape[0] :]]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """``int64 (N,)``: the majority class of each image's code, the fallback for unseen codes."""
        rows = self.lookup(images)
        fallback = torch.full_like(rows, self.fallback)
        return torch.where(rows >= 0, self.majority[rows.clamp(min=0)], fallback)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Correct count, accuracy, size and unseen-code count of the table on ``images``."""
        labels = _check_labels(labels, images.shape[0])
        rows = self.lookup(images)
        fallback = torch.full_like(rows, self.fallback)
        predicted = torch.where(rows >= 0, self.majority[rows.clamp(min=0)], fallback)
        correct = int((predicted == labels).sum())
        size = int(labels.shape[0])
        return {
            "correct": correct,
            "size": size,
            "accuracy": correct / size if size else float("nan"),
            "unseen": int((rows < 0).sum()),
        }


def fit_table(
    images: torch.Tensor, labels: torch.Tensor, positions: Sequence[int], levels: int = GREY_LEVELS
) -> LookupTable:
    """Count the class histogram of every code of ``positions`` on ``(images, labels)``.

    One ``torch.bincount`` over ``row * 10 + label``, where ``row`` numbers the distinct codes.
    """
    levels = check_levels(levels)
    q = quantise(images, levels)
    positions = check_positions(positions, q.shape[1])
    labels = _check_labels(labels, q.shape[0])
    codes, rows = torch.unique(q[:, positions], dim=0, return_inverse=True)
    counts = torch.bincount(rows * NUM_CLASSES + labels, minlength=codes.shape[0] * NUM_CLASSES)
    counts = counts.view(codes.shape[0], NUM_CLASSES)
    return LookupTable(
        positions=tuple(positions),
        levels=levels,
        codes=codes,
        counts=counts,
        majority=counts.argmax(dim=1),
        fallback=majority_class(labels),
    )


# --------------------------------------------------------------------------------------------------
# Exhaustive search
# --------------------------------------------------------------------------------------------------


def _dense_correct(
    q: torch.Tensor, labels: torch.Tensor, tuples: torch.Tensor, levels: int, chunk_elements: int = DENSE_CHUNK_ELEMENTS
) -> torch.Tensor:
    """In-sample correct count of every row of ``tuples`` (``(T, K)`` positions), by dense counting.

    Chunks of ``C`` tuples are counted with one ``torch.bincount`` over the flattened index
    ``((c * levels**K + code) * 10 + label)``; ``C`` keeps both the index (``C * N``) and the counts
    (``C * levels**K * 10``) under ``chunk_elements``. Touches every (image, tuple) once.
    """
    n = q.shape[0]
    k = tuples.shape[1]
    codes_per_tuple = levels**k
    columns = q.t().contiguous()  # (P, N) uint8: one row per pixel, so a tuple's values are rows
    chunk = max(1, chunk_elements // max(n, codes_per_tuple * NUM_CLASSES))
    correct = torch.empty(tuples.shape[0], dtype=torch.int64, device=q.device)
    for start in range(0, tuples.shape[0], chunk):
        block = tuples[start : start + chunk]
        c = block.shape[0]
        code = torch.arange(c, device=q.device).unsqueeze(1).expand(c, n).clone()
        for j in range(k):
            code = code * levels + columns[block[:, j]].long()
        counts = torch.bincount((code * NUM_CLASSES + labels).flatten(), minlength=c * codes_per_tuple * NUM_CLASSES)
        correct[start : start + c] = counts.view(c, codes_per_tuple, NUM_CLASSES).amax(dim=2).sum(dim=1)
    return correct


def single_correct(images: torch.Tensor, labels: torch.Tensor, levels: int = GREY_LEVELS) -> torch.Tensor:
    """``int64 (P,)``: in-sample correct count of the lookup table of each single pixel."""
    levels = check_levels(levels)
    q = quantise(images, levels)
    labels = _check_labels(labels, q.shape[0])
    return _marginal(q, labels, levels).amax(dim=2).sum(dim=1)


def _marginal(q: torch.Tensor, labels: torch.Tensor, levels: int, chunk_pixels: int = 64) -> torch.Tensor:
    """``int64 (P, levels, 10)``: images with pixel ``p`` in bin ``v`` and class ``c`` (chunked over pixels)."""
    num_pixels = q.shape[1]
    parts = []
    for start in range(0, num_pixels, chunk_pixels):
        block = q[:, start : start + chunk_pixels]
        ids = torch.arange(block.shape[1], device=q.device).unsqueeze(0)
        index = ((ids * levels + block.long()) * NUM_CLASSES + labels.unsqueeze(1)).flatten()
        parts.append(torch.bincount(index, minlength=block.shape[1] * levels * NUM_CLASSES))
    return torch.cat(parts).view(num_pixels, levels, NUM_CLASSES)


def _sparse_pair_row(
    q: torch.Tensor,
    labels: torch.Tensor,
    a: int,
    levels: int,
    marginal: torch.Tensor,
    best_marginal: torch.Tensor,
    on_counts: torch.Tensor,
    class_counts: torch.Tensor,
) -> torch.Tensor:
    """In-sample correct counts of the pairs ``(a, b)``, ``b = a+1 .. P-1`` (see :func:`pair_correct`).

    Work is proportional to the (image, b) incidences where both pixels are off bin 0 ("on"). The
    correct count of a pair is a sum over its codes ``(va, vb)`` of the largest class count, split
    into four parts by which pixels are on:

    * both on: counted directly, ``n(va, vb, c)`` for ``va, vb != 0``;
    * a on, b off: ``n(va, 0, c) = n_a(va, c) - sum_{vb != 0} n(va, vb, c)``. Where no image has both
      on with that ``va``, its max is the marginal's; only the touched ``(b, va)`` are corrected;
    * a off, b on: the same with the roles swapped;
    * both off: ``n(0, 0, c) = n(c) - n(a on, c) - n(b on, c) + n(both on, c)``.
    """
    num_pixels = q.shape[1]
    width = num_pixels - a - 1  # pairs (a, b), indexed r = b - a - 1
    device = q.device
    both_on = torch.zeros(width, dtype=torch.int64, device=device)  # sum over on-on codes of max class count
    on_on_classes = torch.zeros(width * NUM_CLASSES, dtype=torch.int64, device=device)  # n(both on, c)
    a_fix = torch.zeros(width, dtype=torch.int64, device=device)
    b_fix = torch.zeros(width, dtype=torch.int64, device=device)
    on_a = torch.nonzero(q[:, a]).squeeze(1)
    if on_a.numel() and width:
        sub = q[on_a, a + 1 :]
        row, r = torch.nonzero(sub, as_tuple=True)
        # int32 keys sort faster than int64; int64 when the key space needs it
        dtype = torch.int32 if width * levels * levels * NUM_CLASSES < 2**31 else torch.int64
        va = q[on_a, a].to(dtype)[row]
        vb = sub[row, r].to(dtype)
        key = ((r.to(dtype) * levels + va) * levels + vb) * NUM_CLASSES + labels[on_a].to(dtype)[row]
        keys, counts = torch.unique(key, return_counts=True)  # sorted by (r, va, vb, class)
        code = keys // NUM_CLASSES
        cls = (keys - code * NUM_CLASSES).long()
        r_key = (code // (levels * levels)).long()
        # both on
        codes, code_group = torch.unique_consecutive(code, return_inverse=True)
        best = torch.zeros(codes.shape[0], dtype=torch.int64, device=device)
        best.scatter_reduce_(0, code_group, counts, reduce="amax")
        both_on.scatter_add_(0, (codes // (levels * levels)).long(), best)
        on_on_classes.scatter_add_(0, r_key * NUM_CLASSES + cls, counts)
        # a on, b off: correct the (r, va) groups that on-on images touch (r * levels + va is sorted)
        ra, ra_group = torch.unique_consecutive(code // levels, return_inverse=True)
        by_a = torch.zeros(ra.shape[0] * NUM_CLASSES, dtype=torch.int64, device=device)
        by_a = by_a.scatter_add_(0, ra_group * NUM_CLASSES + cls, counts).view(-1, NUM_CLASSES)
        va_u = (ra % levels).long()
        fix = (marginal[a, va_u] - by_a).amax(dim=1) - best_marginal[a, va_u]
        a_fix.scatter_add_(0, (ra // levels).long(), fix)
        # a off, b on: the same for the (r, vb) groups (not sorted: a full unique)
        rb, rb_group = torch.unique(r_key * levels + (code % levels).long(), return_inverse=True)
        by_b = torch.zeros(rb.shape[0] * NUM_CLASSES, dtype=torch.int64, device=device)
        by_b = by_b.scatter_add_(0, rb_group * NUM_CLASSES + cls, counts).view(-1, NUM_CLASSES)
        r_b, vb_u = rb // levels, rb % levels
        fix = (marginal[a + 1 + r_b, vb_u] - by_b).amax(dim=1) - best_marginal[a + 1 + r_b, vb_u]
        b_fix.scatter_add_(0, r_b, fix)
    a_only = best_marginal[a, 1:].sum() + a_fix
    b_only = best_marginal[a + 1 :, 1:].sum(dim=1) + b_fix
    neither = class_counts - on_counts[a] - on_counts[a + 1 :] + on_on_classes.view(width, NUM_CLASSES)
    return both_on + a_only + b_only + neither.amax(dim=1)


def pair_correct(
    images: torch.Tensor, labels: torch.Tensor, levels: int = GREY_LEVELS, method: str = "sparse", progress: Any = None
) -> torch.Tensor:
    """``int64 (P, P)``: in-sample correct count of the lookup table of every pair ``(a, b)``,
    ``a < b``, in the upper triangle; ``-1`` on and below the diagonal.

    Both methods are exact and give identical results:

    * ``"sparse"`` (default): uses that most pixels sit in bin 0 (MNIST background). For each ``a``
      it counts only images where both ``a`` and ``b`` are off bin 0 (``torch.unique`` over a
      flattened ``(b, qa, qb, label)`` key) and recovers the other three cases (``a`` on / ``b`` off,
      etc.) by subtracting from per-pixel marginal histograms (see :func:`_sparse_pair_row`). Work
      ~ sum over images of (on-pixels choose 2): 7.2e8 on MNIST train at 256 levels, 3.6e8 at 2
      levels. Exact on any data, but only fast on sparse data.
    * ``"dense"``: chunks of pairs counted with one ``bincount`` over a flattened
      ``(pair, code, label)`` index (memory bounded by :data:`DENSE_CHUNK_ELEMENTS`). Touches all
      ``N * P(P-1)/2`` (image, pair) incidences, 1.8e10 on MNIST train, plus ``levels**2 * 10``
      counts per pair: far slower than ``"sparse"`` on a CPU. Simple, kept as the reference the
      sparse method is tested against, and a fit for GPUs.

    :param progress: optional callable ``progress(done_rows, total_rows)`` (sparse only).
    """
    levels = check_levels(levels)
    if method not in PAIR_METHODS:
        raise ValueError(f"Unknown pair-search method {method!r}; valid methods are {list(PAIR_METHODS)}.")
    q = quantise(images, levels)
    labels = _check_labels(labels, q.shape[0])
    num_pixels = q.shape[1]
    result = torch.full((num_pixels, num_pixels), -1, dtype=torch.int64, device=q.device)
    if num_pixels < 2:
        return result
    a_idx, b_idx = torch.triu_indices(num_pixels, num_pixels, offset=1, device=q.device)
    if method == "dense":
        result[a_idx, b_idx] = _dense_correct(q, labels, torch.stack([a_idx, b_idx], dim=1), levels)
        return result
    marginal = _marginal(q, labels, levels)
    best_marginal = marginal.amax(dim=2)  # (P, levels): largest class count of each single-pixel bin
    on_counts = marginal[:, 1:].sum(dim=1)  # (P, 10): images with the pixel off bin 0, per class
    class_counts = torch.bincount(labels, minlength=NUM_CLASSES).unsqueeze(0)
    for a in range(num_pixels - 1):
        result[a, a + 1 :] = _sparse_pair_row(q, labels, a, levels, marginal, best_marginal, on_counts, class_counts)
        if progress is not None:
            progress(a + 1, num_pixels - 1)
    return result


def rank(scores: torch.Tensor, k: int, top: int) -> list[tuple[tuple[int, ...], int]]:
    """The ``top`` best position tuples of a :func:`single_correct` (``k=1``) or :func:`pair_correct`
    (``k=2``) result: ``[((positions...), correct), ...]``, most correct first, ties to the smaller
    (lexicographic) positions."""
    values = scores.cpu().numpy()
    if k == 1:
        index = np.arange(values.shape[0])
        order = np.lexsort((index, -values))[:top]
        return [((int(p),), int(values[p])) for p in order]
    a, b = np.triu_indices(values.shape[0], k=1)
    flat = values[a, b]
    order = np.lexsort((b, a, -flat))[:top]
    return [((int(a[i]), int(b[i])), int(flat[i])) for i in order]


def search(
    images: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    levels: int = GREY_LEVELS,
    top: int = 5,
    method: str = "sparse",
    progress: Any = None,
) -> list[tuple[tuple[int, ...], int]]:
    """Exhaustive search for the ``k`` positions (1 or 2) with the most in-sample correct images."""
    k = check_search_size(k)
    levels = check_levels(levels)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a positive integer (how many best positions to report), got {top!r}.")
    if k == 1:
        scores = single_correct(images, labels, levels)
    else:
        scores = pair_correct(images, labels, levels, method=method, progress=progress)
    return rank(scores, k, top)


# --------------------------------------------------------------------------------------------------
# The report behind the command line
# --------------------------------------------------------------------------------------------------


def fit_and_heldout(fit: str, device: torch.device | str = "cpu"):
    """``(fit_images, fit_labels, heldout_images, heldout_labels, heldout_name)`` for a fitting split:
    ``"train"`` (held-out: test), ``"test"`` (held-out: train) or ``"all"`` (train + test, no held-out:
    the held-out entries are ``None``)."""
    if fit not in FIT_SPLITS:
        raise ValueError(f"Unknown fitting split {fit!r}; valid values are {list(FIT_SPLITS)}.")
    if fit == "all":
        train, test = load_mnist("train", device), load_mnist("test", device)
        return torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]), None, None, None
    other = "test" if fit == "train" else "train"
    fitting, heldout = load_mnist(fit, device), load_mnist(other, device)
    return fitting.images, fitting.labels, heldout.images, heldout.labels, other


def describe(
    table: LookupTable,
    fit_images: torch.Tensor,
    fit_labels: torch.Tensor,
    heldout_images: torch.Tensor | None,
    heldout_labels: torch.Tensor | None,
) -> dict[str, Any]:
    """One result entry: positions, codes seen, in-sample and held-out counts and accuracies."""
    fit_size = int(fit_labels.shape[0])
    entry: dict[str, Any] = {
        "pixels": list(table.positions),
        "ij": [list(to_ij(p)) for p in table.positions],
        "codes_seen": int(table.codes.shape[0]),
        "in_sample_correct": table.in_sample_correct,
        "in_sample_accuracy": table.in_sample_correct / fit_size,
        "fallback_class": table.fallback,
    }
    check = table.evaluate(fit_images, fit_labels)["correct"]
    assert check == table.in_sample_correct, "predict() disagrees with the table counts"
    if heldout_images is not None:
        heldout = table.evaluate(heldout_images, heldout_labels)
        entry.update(
            heldout_correct=heldout["correct"],
            heldout_accuracy=heldout["accuracy"],
            heldout_unseen_codes=heldout["unseen"],
        )
    return entry


def oracle_report(
    pixels: Sequence[int] | None = None,
    search_k: int | None = None,
    levels: int = GREY_LEVELS,
    fit: str = "train",
    top: int = 5,
    method: str = "sparse",
    device: torch.device | str = "cpu",
    progress: Any = None,
) -> dict[str, Any]:
    """Fit (and, with ``search_k``, first search for) lookup tables and report their accuracies.

    Exactly one of ``pixels`` (flat indices) and ``search_k`` (1 or 2) must be given.
    """
    if (pixels is None or len(pixels) == 0) == (search_k is None):
        raise ValueError("Give exactly one of pixels (e.g. --pixels 406 409) and search_k (--search 1 or --search 2).")
    levels = check_levels(levels)
    if search_k is not None:
        search_k = check_search_size(search_k)
    else:
        pixels = check_positions(pixels)
    fit_images, fit_labels, heldout_images, heldout_labels, heldout_name = fit_and_heldout(fit, device)
    report: dict[str, Any] = {
        "levels": levels,
        "fit": fit,
        "fit_size": int(fit_labels.shape[0]),
        "heldout": heldout_name,
        "heldout_size": None if heldout_labels is None else int(heldout_labels.shape[0]),
        "device": str(torch.device(device)),
        "search": search_k,
    }
    if search_k is None:
        candidates = [tuple(pixels)]
    else:
        start = time.perf_counter()
        found = search(fit_images, fit_labels, search_k, levels, top=top, method=method, progress=progress)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        report["search_seconds"] = time.perf_counter() - start
        report["method"] = method if search_k == 2 else "dense"
        candidates = [positions for positions, _ in found]
    results = []
    for rank_, positions in enumerate(candidates, start=1):
        entry = describe(
            fit_table(fit_images, fit_labels, positions, levels), fit_images, fit_labels, heldout_images, heldout_labels
        )
        if search_k is not None and entry["in_sample_correct"] != found[rank_ - 1][1]:
            raise RuntimeError(
                f"search counted {found[rank_ - 1][1]} correct for {positions}, the table "
                f"{entry['in_sample_correct']}: a bug in experiments/oracle.py's search"
            )
        results.append({"rank": rank_, **entry} if search_k is not None else entry)
    report["results"] = results
    return report


def format_summary(report: dict[str, Any]) -> str:
    """The human-readable summary the command line prints."""
    fit, heldout = report["fit"], report["heldout"]
    fit_name = "train+test" if fit == "all" else fit
    lines = []
    what = f"best {report['search']} position(s) by exhaustive search" if report["search"] else "given pixels"
    lines.append(
        f"Lookup-table oracle, {what}; levels={report['levels']}; fitted on {fit_name} ({report['fit_size']:,} images)"
    )
    if heldout is None:
        lines.append("held-out: not defined for --fit all (every image is in the fitting set): in-sample only")
    else:
        lines.append(
            f"held-out: {heldout} ({report['heldout_size']:,} images); unseen codes predict class "
            f"{report['results'][0]['fallback_class']} (majority of {fit_name})"
        )
    if report.get("search_seconds") is not None:
        lines.append(f"search: {report['search_seconds']:.1f} s on {report['device']} ({report['method']} counting)")
    header = f"{'rank':>4}  {'pixels':<12} {'(i, j)':<20} {'codes':>6}  {'in-sample':>18}"
    if heldout is not None:
        header += f"  {'held-out':>18}  {'unseen':>6}"
    lines.append(header)
    for i, entry in enumerate(report["results"], start=1):
        pixels = " ".join(str(p) for p in entry["pixels"])
        ij = " ".join(f"({a},{b})" for a, b in entry["ij"])
        line = (
            f"{entry.get('rank', i):>4}  {pixels:<12} {ij:<20} {entry['codes_seen']:>6}  "
            f"{entry['in_sample_correct']:>7,} ({entry['in_sample_accuracy']:7.2%})"
        )
        if heldout is not None:
            line += f"  {entry['heldout_correct']:>7,} ({entry['heldout_accuracy']:7.2%})  {entry['heldout_unseen_codes']:>6}"
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


@dataclass
class Args:
    pixels: tuple[str, ...] = ()
    """pixel positions: flat row-major indices (406 409) or i,j pairs (14,14 14,17); or use --search"""
    search: int | None = None
    """search exhaustively for the best K = 1 or 2 positions instead of giving --pixels"""
    levels: int = 256
    """grey-level bins per pixel, 1..256 (256 = exact grey level; bin = floor(v * levels / 256))"""
    fit: Literal["train", "test", "all"] = "train"
    """split the table is counted on; held-out is the other split (none for all = train + test)"""
    top: int = 5
    """with --search: how many of the best positions to report"""
    method: Literal["sparse", "dense"] = "sparse"
    """pair-search counting, both exact: sparse skips background pixels (fast on a CPU); dense counts
    every (image, pair) (much slower on a CPU; a reference, or for a GPU)"""
    device: str = "auto"
    """cpu, cuda or auto"""
    json: str | None = None
    """also write the results to this JSON file"""


def main(args: Args) -> dict:
    device = resolve_device(args.device)
    with user_errors(ValueError):  # --pixels as the user wrote them
        pixels = parse_pixels(args.pixels) if args.pixels else None
    report = oracle_report(
        pixels=pixels,
        search_k=args.search,
        levels=args.levels,
        fit=args.fit,
        top=args.top,
        method=args.method,
        device=device,
        progress=_progress if args.search == 2 else None,
    )
    print(format_summary(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"args": vars(args), **report}, indent=2) + "\n")
        print(f"wrote {path}")
    return report


def _progress(done: int, total: int) -> None:
    if done % 98 == 0 or done == total:
        print(f"  pair search: {done}/{total} first pixels", file=sys.stderr, flush=True)


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
