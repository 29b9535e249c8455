"""A digest of a checkpoint's contents, stored in the file and checked when it is read back.

A file written with a digest (:func:`content_digest` of everything in it but the ``digest`` entry) is
refused at load when one bit of it has changed: a flipped bit in a weight otherwise loads as a plausible
number and quietly changes every result. Files written before digests existed carry none and load as
they are.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

#: The key of the digest in a checkpoint dictionary.
DIGEST_KEY = "digest"


def content_digest(value: Any) -> str:
    """SHA-256 (hex) of ``value``: every tensor's dtype, shape and bytes, and every other value's
    ``repr``, walked in order (dictionary keys sorted, a ``digest`` entry left out). The same contents
    give the same digest on any device and after a ``torch.save``/``torch.load`` round trip.

    :param value: a checkpoint: nested dicts, lists and tuples of tensors and plain Python values.
    """
    hasher = hashlib.sha256()
    _feed(hasher, value, top=True)
    return hasher.hexdigest()


def _feed(hasher: Any, value: Any, top: bool = False) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().resolve_conj().resolve_neg().cpu().contiguous()
        hasher.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        if tensor.numel():
            hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        items = [(key, item) for key, item in value.items() if not (top and key == DIGEST_KEY)]
        hasher.update(f"dict {len(items)}\n".encode())
        for key, item in sorted(items, key=lambda pair: repr(pair[0])):
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):
        hasher.update(f"list {len(value)}\n".encode())
        for item in value:
            _feed(hasher, item)
    else:
        text = repr(value)
        hasher.update(f"value {len(text)} {text}\n".encode())


def with_digest(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with its ``digest`` entry set (a new dict; the input is not changed)."""
    return {**checkpoint, DIGEST_KEY: content_digest(checkpoint)}


def check_digest(checkpoint: dict[str, Any], source: str) -> None:
    """Refuse a checkpoint whose contents do not match the digest it carries (one without a digest passes).

    :param checkpoint: what ``torch.load`` returned.
    :param source: the file, named in the message.
    :raises ValueError: the contents changed since the file was written; the message names the file, the
        expected digest (the one stored) and the one found.
    """
    expected = checkpoint.get(DIGEST_KEY)
    if expected is None:
        return
    found = content_digest(checkpoint)
    if found != expected:
        raise ValueError(
            f"{source} is damaged: its contents do not match the digest written with it (expected {expected}, "
            f"found {found}). Restore the file from a copy, or retrain it."
        )
