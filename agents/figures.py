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
    glimpses: int,
    path: str | os.PathLike,
    sampler: Sampler | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Save a PNG: for the first test image of each digit, the numbered glimpse trail over the image
    (top) and the predicted class probabilities after each glimpse (bottom, glimpses down, classes
    across), read out with ``sampler`` (default ``nearest``)."""
    data = load_mnist("test", device)
    first = torch.stack([torch.nonzero(data.labels == digit)[0, 0] for digit in range(NUM_CLASSES)])
    images = data.images[first]
    episode = run_episodes(policy, core, sampler or Sampler("nearest"), images.float() / 255.0, glimpses)
    predictions = torch.softmax(episode.logits, dim=-1).cpu()  # (T, 10 images, 10 classes)
    coords = episode.coords.cpu()
    figure, axes = plt.subplots(2, NUM_CLASSES, figsize=(2.2 * NUM_CLASSES, 5.4), height_ratios=[1.0, 1.1])
    for digit in range(NUM_CLASSES):
        trail = draw_trail(images[digit].cpu().numpy(), coords[:, digit].numpy(), scale=16)
        axes[0, digit].imshow(trail)
        guess = int(predictions[-1, digit].argmax())
        axes[0, digit].set_title(f"label {digit}, says {guess}", fontsize=9, color="green" if guess == digit else "red")
        heatmap = axes[1, digit].imshow(
            predictions[:, digit].numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0
        )
        axes[1, digit].set_xticks(range(NUM_CLASSES))
        axes[1, digit].tick_params(labelsize=6)
        axes[1, digit].set_xlabel("class", fontsize=8)
        axes[0, digit].set_xticks([])
        axes[0, digit].set_yticks([])
    axes[1, 0].set_ylabel("glimpse (top = first)", fontsize=8)
    figure.tight_layout()
    figure.colorbar(heatmap, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01, label="probability")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
