"""Vector arithmetic the tests share."""

from __future__ import annotations

import numpy as np


def cosine(a, b) -> float:
    """Cosine of two vectors, computed in float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
