"""Pictures of glimpse trails: the digit enlarged, each glimpse a numbered dot, joined in order."""

from __future__ import annotations

import numpy as np

SCALE = 16  # screen pixels per image pixel
#: Rows of ``scale`` pixels above the digit (the header line) and below it (the probability chart).
HEADER, STRIP = 2, 7


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

    The digit enlarged, each glimpse a ring numbered from 1, from yellow (first) to red (last), joined
    in order; each number is placed beside its ring where it covers no other ring or number. With
    ``prediction`` or ``label``, a header line above states the label, the guess and its probability
    (the guess in green when right, red when wrong), and with ``prediction``, a bar chart below gives
    every class's probability on an axis from 0 to 1, the guess's bar in orange with its value, the
    label's bar and number outlined.

    :param image: ``uint8`` ``(28, 28)`` grey levels.
    :param coords: ``(t, 2)`` glimpse locations ``(i, j)`` in pixel units, in order.
    :param prediction: optional ``(10,)`` class probabilities, drawn as the bar chart below.
    :param scale: screen pixels per image pixel.
    :param label: the true class, written in the header (and its bar outlined in the chart).
    :return: ``uint8`` RGB array ``(H + 28 * scale + S, 28 * scale, 3)``: a header of ``H = HEADER * scale``
        rows with ``prediction`` or ``label`` (else 0), and a chart of ``S = STRIP * scale`` rows with
        ``prediction`` (else 0); the digit's pixels fill rows ``H .. H + 28 * scale``.
    """
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as error:  # the environment itself does not need Pillow
        raise ImportError("Rendering glimpse trails needs Pillow: pip install 'mnist-glimpse[render]'.") from error
    size = image.shape[0] * scale
    header = HEADER * scale if prediction is not None or label is not None else 0
    strip = STRIP * scale if prediction is not None else 0
    canvas = Image.new("RGB", (size, header + size + strip), (0, 0, 0))
    picture = Image.fromarray(image.astype(np.uint8)).resize((size, size), Image.NEAREST).convert("RGB")
    canvas.paste(picture, (0, header))
    draw = ImageDraw.Draw(canvas)
    small = ImageFont.load_default(size=max(round(0.8 * scale), 8))
    # pixel (i, j) covers [j, j + 1) x [i, i + 1) in image units; its centre is (j + 0.5, i + 0.5)
    points = [((j + 0.5) * scale, header + (i + 0.5) * scale) for i, j in np.asarray(coords, dtype=np.float64)]
    if len(points) > 1:
        draw.line(points, fill=(0, 160, 255), width=max(scale // 8, 1))
    radius = max(scale // 3, 2)
    rings = [(x - radius, y - radius, x + radius, y + radius) for x, y in points]
    for step, ring in enumerate(rings):
        draw.ellipse(ring, outline=_colour(step, len(points)), width=max(scale // 8, 1))
    _number_rings(draw, points, rings, radius, small, (0, header, size, header + size))
    if header:
        _write_header(draw, prediction, label, len(points), size, header, ImageFont.load_default(size=max(scale, 10)))
    if prediction is not None:
        _draw_chart(
            draw,
            np.asarray(prediction, dtype=np.float64),
            label,
            (0, header + size, size, header + size + strip),
            small,
        )
    return np.asarray(canvas)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The area two boxes ``(left, top, right, bottom)`` share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _number_rings(draw, points: list, rings: list, radius: int, font, area: tuple[float, ...]) -> None:
    """Write each glimpse's number beside its ring, at the first of the places around it (nearest
    first) that covers no ring and no number already written, else where it covers least."""
    taken = list(rings)
    directions = [(1, -1), (1, 1), (-1, -1), (-1, 1), (1, 0), (-1, 0), (0, -1), (0, 1)]
    for step, (x, y) in enumerate(points):
        text = str(step + 1)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = right - left + 2, bottom - top + 2
        best, best_cost = None, float("inf")
        for reach in (1.0, 2.0, 3.0):
            for dx, dy in directions:
                cx = x + dx * (radius + reach * width / 2 + 1)
                cy = y + dy * (radius + reach * height / 2)
                box = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
                outside = box[0] < area[0] or box[1] < area[1] or box[2] > area[2] or box[3] > area[3]
                cost = sum(_overlap(box, other) for other in taken) + (1e6 if outside else 0.0) + reach
                if cost < best_cost:
                    best, best_cost = box, cost
            if best_cost < 10:  # free (the cost is then just how far out it is)
                break
        taken.append(best)
        draw.rectangle(best, fill=(0, 0, 0))
        draw.text((best[0] + 1 - left, best[1] + 1 - top), text, fill=_colour(step, len(points)), font=font)


def _write_header(draw, prediction, label: int | None, steps: int, width: int, height: int, font) -> None:
    """``label L   guess G (p 0.98)   after T glimpses``, on the header's line."""
    parts: list[tuple[str, tuple[int, int, int]]] = []
    if label is not None:
        parts.append((f"label {label}", (255, 255, 255)))
    if prediction is not None:
        guess = int(np.argmax(prediction))
        right = label is None or guess == label
        parts.append((f"guess {guess} (p {float(prediction[guess]):.2f})", (90, 230, 90) if right else (255, 90, 70)))
    parts.append((f"after {steps} glimpse{'' if steps == 1 else 's'}", (170, 170, 170)))
    x = height // 4
    for text, colour in parts:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.text((x - left, (height - (bottom - top)) // 2 - top), text, fill=colour, font=font)
        x += right - left + height // 2


def _draw_chart(draw, prediction: np.ndarray, label: int | None, box: tuple[int, ...], font) -> None:
    """Every class's probability as a bar on an axis from 0 to 1, classes written below."""
    left, top, right, bottom = box
    _, _, tick_width, text_height = draw.textbbox((0, 0), "0.5", font=font)
    axis = left + tick_width + 8  # x of the axis
    low = bottom - text_height - 6  # y of probability 0 (class numbers below it)
    high = top + 2 * text_height + 6  # y of probability 1 (room above for the guess's value)
    for value in (0.0, 0.5, 1.0):
        y = low - value * (low - high)
        draw.line((axis, y, right - 2, y), fill=(70, 70, 70) if value else (200, 200, 200))
        text = f"{value:g}"
        draw.text(
            (axis - 5 - draw.textlength(text, font=font), y - text_height / 2 - 1),
            text,
            fill=(200, 200, 200),
            font=font,
        )
    draw.line((axis, high, axis, low), fill=(200, 200, 200))
    guess = int(np.argmax(prediction))
    width = (right - 2 - axis) / len(prediction)
    for digit, probability in enumerate(prediction):
        x0, x1 = axis + digit * width + 2, axis + (digit + 1) * width - 2
        y = low - float(np.clip(probability, 0.0, 1.0)) * (low - high)
        fill = (255, 165, 0) if digit == guess else (90, 170, 90)
        draw.rectangle(
            (x0, min(y, low - 1), x1, low - 1), fill=fill, outline=(255, 255, 255) if digit == label else None
        )
        number = str(digit)
        if digit == label:  # the true class's number is boxed, however small its bar
            x = (x0 + x1) / 2
            half = draw.textlength(number, font=font) / 2 + 3
            draw.rectangle((x - half, low + 2, x + half, bottom - 1), outline=(255, 255, 255))
        draw.text(
            ((x0 + x1) / 2 - draw.textlength(number, font=font) / 2, low + 3), number, fill=(255, 255, 255), font=font
        )
        if digit == guess:
            value = f"{probability:.2f}"
            centre = min(
                max((x0 + x1) / 2, axis + draw.textlength(value, font=font) / 2),
                right - draw.textlength(value, font=font) / 2,
            )
            draw.text(
                (centre - draw.textlength(value, font=font) / 2, y - text_height - 6),
                value,
                fill=(255, 165, 0),
                font=font,
            )
