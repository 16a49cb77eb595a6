"""The pair reader's examples: the runs of parts /read's segmenter cuts from lines of MNIST *training* digits that may
be two touching digits, each labelled by the ink it holds. The lines are training.pieces' (2-4 digits, most gaps
touching, restroked and blurred as the verifier's are); nothing here sees a test digit.

A run is a pair (left digit, right digit) when it holds nearly all the ink of two neighbouring digits and little of
any other; it is "not a pair" when it holds less than PART of one of its two best covered digits (one digit, or a
digit and a fragment) or MIXED of a third; runs in between are left out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.reading import PairRun
from training.pieces import MIXED, PART, STRAY, WHOLE, Images, Line, planned_lines

TOUCHING = 0.9  # share of the gaps where two digits touch: most runs the segmenter offers then hold a pair

NOT_A_PAIR = -1  # the left and right label of a run that is not two whole digits


def pair_label(run: PairRun, line: Line) -> tuple[int, int] | None:
    """(left, right) digits of a run that is two whole neighbours, (NOT_A_PAIR, NOT_A_PAIR) for one that is not,
    None when it is neither clearly."""
    x, y, w, h = run.box
    cover = np.array([(d[y : y + h, x : x + w] & run.mask).sum() / max(1, d.sum()) for d in line.digits])
    order = np.argsort(cover)[::-1]
    first, second = sorted(int(i) for i in order[:2])
    third = float(cover[order[2]]) if len(cover) > 2 else 0.0
    if min(cover[first], cover[second]) >= WHOLE and third <= STRAY and second == first + 1:
        return line.labels[first], line.labels[second]
    if min(cover[first], cover[second]) < PART or third >= MIXED:
        return NOT_A_PAIR, NOT_A_PAIR
    return None


def labelled_pairs(
    images: Images, labels: npt.NDArray[np.uint8], lines: int, seed: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The runs /read's segmenter offers the pair reader from `lines` written lines, (N, 28, 56) as /read prepares
    them, and their labels (N, 2): the left and right digit, or NOT_A_PAIR twice."""
    pairs, kinds = [], []
    for line, plan in planned_lines(images, labels, lines, seed, TOUCHING):
        for run in plan.pairs:
            label = pair_label(run, line)
            if label is not None:
                pairs.append(run.pair)
                kinds.append(label)
    return np.stack(pairs), np.array(kinds, np.int64)
