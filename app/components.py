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
FRAME_BAND, FRAME_COVER = 0.08, 0.9  # a box: ink within 8% of each side of its bounding box along 90% of it,
FRAME_INSIDE = 0.1  # and little inside (a written digit is a component of its own)
FRAME_SIDES = 2  # sides so covered: a box that lost a side or two to line removal or a faint print is an U or an L
BAR = 6  # a component this many times wider than tall is an underline, a rule or what is left of a box
NEAR_EDGE = 0.03  # share of the long side within which a component is near a side of the page
SOLID = 0.5  # a component filling this share of its box is a blob (the table beyond the page), not strokes


@dataclass(frozen=True)
class Runs:
    """Horizontal runs of a mask: row, first column and column after the last, in row-major order."""

    rows: Ints
    starts: Ints
    ends: Ints


@dataclass(frozen=True)
class Components:
    """Per component: ink mass, pixel count and bounding box (top, left, bottom, right; exclusive ends)."""

    mass: npt.NDArray[np.float64]
    area: npt.NDArray[np.float64]
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
    area = np.bincount(labels, runs.ends - runs.starts, count)
    return Components(np.bincount(labels, run_mass, count), area, top, left, bottom, right)


def digit_group(
    parts: Components, runs: Runs, labels: Ints, shape: tuple[int, int], *, gap: float, min_side: int
) -> Ints:
    """The indices of the components that make the digit: the heaviest one at least min_side across (touching the
    border only if nothing else qualifies), grown by every component at least a third of min_side across whose box
    lies within `gap` times the group's size of the group's box. BlankImage when there is none."""
    sides = np.maximum(parts.bottom - parts.top, parts.right - parts.left)
    frames = np.isin(np.arange(len(sides)), frame_indices(parts, runs, labels, shape, min_side))
    bars = (parts.right - parts.left) >= BAR * (parts.bottom - parts.top)
    seeds = _seed_weights(parts, shape) * (sides >= min_side) * ~frames * ~bars
    if seeds.max() <= 0:
        raise BlankImage()
    candidates = (parts.mass >= SPECK * parts.mass[np.argmax(seeds)]) & (sides * 3 >= min_side) & ~frames & ~bars
    group = np.zeros_like(candidates)
    group[int(np.argmax(seeds))] = True
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


def frame_indices(parts: Components, runs: Runs, labels: Ints, shape: tuple[int, int], min_side: int) -> Ints:
    """The components that are boxes printed on a form, or what is left of one: ink along nearly all of at least two
    sides of their bounding box (an L, an U, the whole box) and little inside. A 0 or an 8 touches its box's sides
    only in their middle, a 7's stroke leaves its box's right side near the top."""
    sides = np.maximum(parts.bottom - parts.top, parts.right - parts.left)
    frames = []
    for index in np.flatnonzero(sides >= min_side):
        top, left, bottom, right = parts.top[index], parts.left[index], parts.bottom[index], parts.right[index]
        box = paint(runs, labels == index, shape)[top:bottom, left:right]
        band = max(2, round(FRAME_BAND * min(box.shape)))
        edges = (box[:band].any(axis=0), box[-band:].any(axis=0), box[:, :band].any(axis=1), box[:, -band:].any(axis=1))
        hollow = box[band:-band, band:-band].mean() < FRAME_INSIDE if min(box.shape) > 2 * band else False
        if hollow and sum(edge.mean() >= FRAME_COVER for edge in edges) >= FRAME_SIDES:
            frames.append(index)
    return np.array(frames, dtype=np.intp)


def _seed_weights(parts: Components, shape: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Ink mass, zero for what touches the border or comes near two of its sides (page edges, the table beyond the
    page, shadows, a corner) unless no other component has ink; then only what touches one side, is not solid and
    does not span half the page: a digit cut by the edge of the photo."""
    height, width = shape
    edges = (parts.top, parts.left, height - parts.bottom, width - parts.right)  # distance to each side
    margin = NEAR_EDGE * max(shape)
    touching = sum((edge == 0).astype(int) for edge in edges)
    near = sum((edge <= margin).astype(int) for edge in edges)
    inside = np.where((touching > 0) | (near > 1), 0.0, parts.mass)
    if inside.max() > 0:
        return inside
    box_height, box_width = parts.bottom - parts.top, parts.right - parts.left
    solid = parts.area >= SOLID * box_height * box_width
    spans = (box_height * 2 > height) | (box_width * 2 > width)
    return np.where(solid | spans | (near > 1), 0.0, parts.mass)


def paint(runs: Runs, chosen: Mask, shape: tuple[int, int]) -> Mask:
    """The mask of the chosen runs."""
    height, width = shape
    steps = np.zeros((height, width + 1), np.int32)
    np.add.at(steps, (runs.rows[chosen], runs.starts[chosen]), 1)
    np.add.at(steps, (runs.rows[chosen], runs.ends[chosen]), -1)
    return np.cumsum(steps, axis=1)[:, :width] > 0


def digit_mask(ink: Mask, score: Gray, *, gap: float, min_side: int) -> Mask:
    """The pixels of the digit among the ink: see digit_group. BlankImage when there is none."""
    runs = mask_runs(ink)
    if len(runs.rows) == 0:
        raise BlankImage()
    labels = run_labels(runs, ink.shape[1])
    parts = measure(runs, labels, score)
    group = digit_group(parts, runs, labels, ink.shape, gap=gap, min_side=min_side)
    return paint(runs, np.isin(labels, group), ink.shape)
