"""Figures of what an agent does: glimpse trails and predictions, one test image per digit."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from agents.rollout import GlimpsePolicy, run_episodes  # noqa: E402
from envs.data import NUM_CLASSES, load_mnist  # noqa: E402
from envs.perception import PerceptionCore  # noqa: E402
from envs.render import draw_trail  # noqa: E402
from envs.sampler import Sampler  # noqa: E402


@torch.no_grad()
def plot_glimpse_trails(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    max_glimpses: int,
    path: str | os.PathLike,
    sampler: Sampler | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Save a PNG: for the first test image of each digit, the numbered glimpse trail over the image
    with the label, the final guess and its probability above it and every class's final probability
    below it (:func:`~envs.render.draw_trail`), and the predicted class probabilities after each
    glimpse (bottom row: glimpses down, classes across), read out with ``sampler`` (default ``nearest``)."""
    data = load_mnist("test", device)
    first = torch.stack([torch.nonzero(data.labels == digit)[0, 0] for digit in range(NUM_CLASSES)])
    images = data.images[first]
    episode = run_episodes(policy, core, sampler or Sampler("nearest"), images.float() / 255.0, max_glimpses)
    predictions = torch.softmax(episode.logits, dim=-1).cpu()  # (T, 10 images, 10 classes)
    coords = episode.coords.cpu()
    columns = NUM_CLASSES // 2  # two rows of digits, each a row of trails above a row of predictions
    figure, axes = plt.subplots(4, columns, figsize=(3.2 * columns, 15.0), height_ratios=[1.45, 1.0, 1.45, 1.0])
    for digit in range(NUM_CLASSES):
        top, column = 2 * (digit // columns), digit % columns
        final = predictions[-1, digit].numpy()
        trail = draw_trail(images[digit].cpu().numpy(), coords[:, digit].numpy(), final, scale=20, label=digit)
        axes[top, column].imshow(trail)
        axes[top, column].set_xticks([])
        axes[top, column].set_yticks([])
        heatmap = axes[top + 1, column].imshow(
            predictions[:, digit].numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0
        )
        axes[top + 1, column].set_xticks(range(NUM_CLASSES))
        axes[top + 1, column].tick_params(labelsize=8)
        axes[top + 1, column].set_xlabel("class", fontsize=9)
        if column == 0:
            axes[top + 1, column].set_ylabel("after glimpse (top = first)", fontsize=9)
    figure.tight_layout()
    figure.colorbar(heatmap, ax=axes[[1, 3], :].ravel().tolist(), fraction=0.02, pad=0.01, label="probability")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
