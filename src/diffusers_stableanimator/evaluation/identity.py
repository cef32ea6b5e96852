"""CSIM: how well the generated person keeps the reference's identity.

The cosine similarity between the ArcFace embedding (insightface antelopev2: SCRFD-10G detector, glintr100
recognizer, the models the package already uses for the face embedding) of the largest face in the reference
and that of the largest face in each generated frame. A frame without a detected face has no CSIM: it is
counted and listed, never silently dropped nor scored 0.
"""

from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class IdentitySimilarity:
    """`reference(frame)` once per video, then `frame(frame)` -> the CSIM of that frame, or None without a face."""

    def __init__(self, analyzer):
        self.analyzer = analyzer
        self._reference: np.ndarray | None = None

    def reference(self, image) -> bool:
        """Set the reference face; False when the reference has no face (then every frame's CSIM is None)."""
        face = self.analyzer.analyze(image, allow_no_face=True)
        self._reference = None if face is None else face.embedding
        return face is not None

    def frame(self, image) -> float | None:
        if self._reference is None:
            return None
        face = self.analyzer.analyze(image, allow_no_face=True)
        return None if face is None else cosine(self._reference, face.embedding)
