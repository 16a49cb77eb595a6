"""Connected components of a binary mask in NumPy alone, and the choice of the digit among them.

Components are found on horizontal runs rather than pixels: each run is joined to the runs it touches in the row
above (8-connectivity), and labels are merged by repeated minimum propagation with pointer jumping. A handwritten
digit on a 384 px page is a few hundred runs, so this costs well under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.errors import BlankImage

Gray = npt.NDArray[np.float32]  # (H, W) in [0, 1]
Mask = npt.NDArray[np.bool_]  # (H, W)
Ints = npt.NDArray[np.intp]

SPECK = 0.05  # a component with less ink than this share of the heaviest one is a speck
EDGE_WEIGHT = 0.25  # a component touching the page's border counts for a quarter: page edges, shadows, fingers


@dataclass(frozen=True)
class Runs:
    """Horizontal runs of a mask: row, first column and column after the last, in row-major order."""

    rows: Ints
    starts: Ints
    ends: Ints


@dataclass(frozen=True)
class Components:
    """Per component: ink mass and bounding box (top, left, bottom, right; exclusive ends)."""

    mass: npt.NDArray[np.float64]
    top: Ints
    left: Ints
    bottom: Ints
    right: Ints


def mask_runs(mask: Mask) -> Runs:
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return Runs(rows, starts, ends)


def run_labels(runs: Runs, width: int) -> Ints:
    """A component label for each run, 0..n-1."""
    stride = width + 2
    start_keys, end_keys = runs.rows * stride + runs.starts, runs.rows * stride + runs.ends
    # The runs of the row above that touch run b: ending at or after b's start, starting at or before b's end.
    above = (runs.rows - 1) * stride
    first = np.searchsorted(end_keys, above + runs.starts, side="left")
    last = np.searchsorted(start_keys, above + runs.ends, side="right")
    counts = np.maximum(last - first, 0)
    lower = np.repeat(np.arange(len(counts)), counts)
    upper = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    labels = np.arange(len(counts))
    while True:
        joined = np.minimum(labels[lower], labels[upper])
        merged = labels.copy()
        np.minimum.at(merged, lower, joined)
        np.minimum.at(merged, upper, joined)
        merged = merged[merged]  # pointer jumping
        if np.array_equal(merged, labels):
            break
        labels = merged
    return np.unique(labels, return_inverse=True)[1]


def measure(runs: Runs, labels: Ints, score: Gray) -> Components:
    """Ink mass and box of each labelled component."""
    count = int(labels.max()) + 1
    cumulative = np.pad(np.cumsum(score, axis=1, dtype=np.float64), ((0, 0), (1, 0)))
    run_mass = cumulative[runs.rows, runs.ends] - cumulative[runs.rows, runs.starts]
    top, left = np.full(count, np.iinfo(np.intp).max), np.full(count, np.iinfo(np.intp).max)
    bottom, right = np.zeros(count, np.intp), np.zeros(count, np.intp)
    np.minimum.at(top, labels, runs.rows)
    np.minimum.at(left, labels, runs.starts)
    np.maximum.at(bottom, labels, runs.rows + 1)
    np.maximum.at(right, labels, runs.ends)
    return Components(np.bincount(labels, run_mass, count), top, left, bottom, right)


def digit_group(parts: Components, shape: tuple[int, int], gap: float) -> Ints:
    """The indices of the components that make the digit: the heaviest one (border-touching ones count less),
    grown by every non-speck component whose box lies within `gap` times the group's size of the group's box."""
    height, width = shape
    on_edge = (parts.top == 0) | (parts.left == 0) | (parts.bottom == height) | (parts.right == width)
    weight = parts.mass * np.where(on_edge, EDGE_WEIGHT, 1.0)
    candidates = weight >= SPECK * weight.max()
    group = np.zeros_like(candidates)
    group[int(np.argmax(weight))] = True
    while True:
        top, left = parts.top[group].min(), parts.left[group].min()
        bottom, right = parts.bottom[group].max(), parts.right[group].max()
        reach = gap * max(bottom - top, right - left)
        near = (
            (parts.top < bottom + reach)
            & (parts.bottom > top - reach)
            & (parts.left < right + reach)
            & (parts.right > left - reach)
        )
        grown = group | (candidates & near)
        if grown.sum() == group.sum():
            return np.flatnonzero(group)
        group = grown


def paint(runs: Runs, chosen: Mask, shape: tuple[int, int]) -> Mask:
    """The mask of the chosen runs."""
    height, width = shape
    steps = np.zeros((height, width + 1), np.int32)
    np.add.at(steps, (runs.rows[chosen], runs.starts[chosen]), 1)
    np.add.at(steps, (runs.rows[chosen], runs.ends[chosen]), -1)
    return np.cumsum(steps, axis=1)[:, :width] > 0


def digit_mask(ink: Mask, score: Gray, *, gap: float, min_side: int) -> Mask:
    """The pixels of the digit among the ink: see digit_group. BlankImage when it is too small to be one."""
    runs = mask_runs(ink)
    if len(runs.rows) == 0:
        raise BlankImage()
    labels = run_labels(runs, ink.shape[1])
    parts = measure(runs, labels, score)
    group = digit_group(parts, ink.shape, gap)
    if max(parts.bottom[group].max() - parts.top[group].min(), parts.right[group].max() - parts.left[group].min()) < (
        min_side
    ):
        raise BlankImage()
    return paint(runs, np.isin(labels, group), ink.shape)
