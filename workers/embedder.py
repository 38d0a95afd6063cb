"""The embedding stage: crops -> joint embedding + attribute probabilities, batched.

:class:`Embedder` is a plain class (runs and is tested without Ray); :class:`EmbedderPool`
spreads batches over Ray actors that each hold one, on a GPU when the cluster has one.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from pedsearch.bundle import Bundle, load_bundle

log = logging.getLogger("pedsearch.workers")


class Embedder:
    """Batched image embedding with one model bundle.

    Args:
        bundle_path: model bundle folder (None = the default bundle).
        device: "cpu", "cuda" or "auto".
        batch_size: crops per forward pass.
    """

    def __init__(self, *, bundle_path: str | os.PathLike[str] | None, device: str = "auto",
                 batch_size: int = 32) -> None:
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bundle: Bundle = load_bundle(bundle_path, parts=("image",), device=device)
        self.device = device
        self.batch_size = batch_size

    @property
    def version(self) -> str:
        return self.bundle.version

    def __call__(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Crops (BGR uint8, any size) -> (embeddings ``(N, D)``, attribute probs ``(N, A)``)."""
        if not crops:
            return (np.zeros((0, self.bundle.embed_dim), np.float32),
                    np.zeros((0, self.bundle.schema.dim), np.float32))
        embs, probs = [], []
        for i in range(0, len(crops), self.batch_size):
            e, p = self.bundle.encode_images(list(crops[i:i + self.batch_size]))
            embs.append(e)
            probs.append(p)
        return np.concatenate(embs), np.concatenate(probs)


class EmbedderPool:
    """Round-robin over Ray embedder actors; one call embeds a list of crops.

    Args:
        actors: Ray actor handles of ``ray.remote(Embedder)``.
        batch_size: crops per actor call.
    """

    def __init__(self, actors: list, *, batch_size: int) -> None:
        if not actors:
            raise ValueError("EmbedderPool needs at least one actor")
        self.actors = actors
        self.batch_size = batch_size
        self._next = 0

    def submit(self, crops: Sequence[np.ndarray]) -> list:
        """Start embedding on the actors at once; returns the refs for :meth:`result`."""
        refs = []
        for i in range(0, len(crops), self.batch_size):
            actor = self.actors[self._next % len(self.actors)]
            self._next += 1
            refs.append(actor.__call__.remote(list(crops[i:i + self.batch_size])))
        return refs

    @staticmethod
    def result(refs: list) -> tuple[np.ndarray, np.ndarray]:
        """Wait for :meth:`submit`'s refs -> (embeddings ``(N, D)``, attribute probs ``(N, A)``)."""
        import ray

        parts = ray.get(refs)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def __call__(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self.result(self.submit(crops))
