"""Seeded per-crop augmentation: the same (seed, crop index) always gives the same pixels.

Every crop draws its own parameters from `np.random.default_rng([seed, index])`,
in a fixed order and whether or not an augmentation is enabled, so a crop's
result never depends on which crops were processed before it, in this attempt
or an earlier one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Augmentation = Literal["flip", "rotate", "brightness", "contrast"]
ALL: tuple[Augmentation, ...] = ("flip", "rotate", "brightness", "contrast")

BRIGHTNESS_RANGE = 32.0
"""Brightness jitter adds a value drawn from [-32, 32] to every channel."""
CONTRAST_RANGE = (0.8, 1.2)
"""Contrast jitter scales around mid-grey (128) by a factor from this range."""


@dataclass(frozen=True)
class Draw:
    """The parameters drawn for one crop."""

    flip: bool
    """Mirror left-right."""
    quarter_turns: int
    """Counter-clockwise rotation by 90 degrees times this (0-3); crops are square."""
    brightness: float
    """Added to every pixel."""
    contrast: float
    """Scale around 128."""

    def as_row(self) -> list[float]:
        """Fixed-width numeric form, stored in the context as one row of an array."""
        return [float(self.flip), float(self.quarter_turns), self.brightness, self.contrast]

    @staticmethod
    def from_row(row: np.ndarray) -> Draw:
        """Inverse of `as_row`."""
        return Draw(bool(row[0]), int(row[1]), float(row[2]), float(row[3]))

    def describe(self, enabled: Sequence[str]) -> dict[str, Any]:
        """What was applied, for the manifest: only the enabled augmentations."""
        out: dict[str, Any] = {}
        if "flip" in enabled:
            out["flip"] = self.flip
        if "rotate" in enabled:
            out["rotate"] = 90 * self.quarter_turns
        if "brightness" in enabled:
            out["brightness"] = round(self.brightness, 6)
        if "contrast" in enabled:
            out["contrast"] = round(self.contrast, 6)
        return out


def draw(seed: int, index: int) -> Draw:
    """Parameters for crop `index` of a run seeded with `seed`."""
    rng = np.random.default_rng([seed, index])
    flip = bool(rng.integers(0, 2))
    turns = int(rng.integers(0, 4))
    brightness = float(rng.uniform(-BRIGHTNESS_RANGE, BRIGHTNESS_RANGE))
    contrast = float(rng.uniform(*CONTRAST_RANGE))
    return Draw(flip, turns, brightness, contrast)


def apply(crop: np.ndarray, d: Draw, enabled: Sequence[str]) -> np.ndarray:
    """A new uint8 crop with the enabled augmentations applied (geometry first, then photometric)."""
    out = crop
    if "flip" in enabled and d.flip:
        out = out[:, ::-1]
    if "rotate" in enabled and d.quarter_turns:
        out = np.rot90(out, d.quarter_turns)
    photometric = ("brightness" in enabled and d.brightness != 0.0) or ("contrast" in enabled and d.contrast != 1.0)
    if photometric:
        # float32 multiply-add then round: IEEE-exact, so identical on every run and host.
        x = out.astype(np.float32)
        if "contrast" in enabled:
            x = (x - np.float32(128.0)) * np.float32(d.contrast) + np.float32(128.0)
        if "brightness" in enabled:
            x = x + np.float32(d.brightness)
        out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)
