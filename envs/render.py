"""Pictures of glimpse trails: the digit enlarged, each glimpse a numbered dot, joined in order."""

from __future__ import annotations

import numpy as np

SCALE = 12  # screen pixels per image pixel


def _colour(step: int, steps: int) -> tuple[int, int, int]:
    """From yellow (first glimpse) to red (last)."""
    fraction = step / max(steps - 1, 1)
    return (255, int(220 * (1.0 - fraction)), 0)


def draw_trail(
    image: np.ndarray,
    coords: np.ndarray,
    prediction: np.ndarray | None = None,
    scale: int = SCALE,
    label: int | None = None,
) -> np.ndarray:
    """Render a glimpse trail (needs Pillow, the ``render`` extra).

    :param image: ``uint8`` ``(28, 28)`` grey levels.
    :param coords: ``(t, 2)`` glimpse locations ``(i, j)`` in pixel units, in order.
    :param prediction: optional ``(10,)`` class probabilities, written as a bar chart strip below.
    :param scale: screen pixels per image pixel.
    :param label: the true class, written in the top-left corner (and its bar outlined in the strip).
    :return: ``uint8`` RGB array ``(28 * scale [+ strip], 28 * scale, 3)``.
    """
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as error:  # the environment itself does not need Pillow
        raise ImportError("Rendering glimpse trails needs Pillow: pip install 'mnist-glimpse[render]'.") from error
    size = image.shape[0] * scale
    font = ImageFont.load_default(size=max(scale, 10))
    picture = Image.fromarray(image.astype(np.uint8)).resize((size, size), Image.NEAREST).convert("RGB")
    strip = 3 * scale if prediction is not None else 0
    canvas = Image.new("RGB", (size, size + strip), (0, 0, 0))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    # pixel (i, j) covers [j, j + 1) x [i, i + 1) in image units; its centre is (j + 0.5, i + 0.5)
    points = [((j + 0.5) * scale, (i + 0.5) * scale) for i, j in np.asarray(coords, dtype=np.float64)]
    if len(points) > 1:
        draw.line(points, fill=(0, 160, 255), width=max(scale // 6, 1))
    radius = max(scale // 3, 2)
    for step, (x, y) in enumerate(points):
        colour = _colour(step, len(points))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=2)
        draw.text((x + radius, y - 2 * radius), str(step + 1), fill=colour, font=font)
    if label is not None:
        draw.text((scale // 2, scale // 4), f"label {label}", fill=(120, 255, 120), font=font)
    if prediction is not None:
        width = size / len(prediction)
        for digit, probability in enumerate(np.asarray(prediction, dtype=np.float64)):
            top = size + strip - 1 - probability * (strip - scale)
            outline = (255, 255, 255) if digit == label else None
            draw.rectangle(
                (digit * width + 1, top, (digit + 1) * width - 2, size + strip - 1), fill=(90, 200, 90), outline=outline
            )
            draw.text((digit * width + width / 2 - 3, size + 1), str(digit), fill=(255, 255, 255))
    return np.asarray(canvas)
