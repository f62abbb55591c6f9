"""Periphery / corner crops (DESIGN 2.3) against hand examples, properties and an
independent slow implementation (occupancy grid per elementary interval)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu.attack.crops import (
    clip_boxes,
    corner_crop,
    default_min_crop_px,
    largest_empty_crop,
    periphery_candidates,
    periphery_crop,
)


def slow_periphery(boxes, W, H, min_px):
    """Independent reference for integer boxes: per elementary x-interval, mark covered
    unit rows on a boolean grid and read off the free runs top to bottom."""
    kept = []
    for x0, y0, x1, y1 in boxes:
        if x0 >= W or x1 <= 0 or y0 >= H or y1 <= 0:
            continue
        c = (max(x0, 0), max(y0, 0), min(x1, W), min(y1, H))
        if c[2] > c[0] and c[3] > c[1]:  # degenerate boxes cover nothing: ignored
            kept.append(c)
    if not kept:
        return None, 0
    xs = sorted({0, W} | {b[0] for b in kept} | {b[2] for b in kept})
    best, best_side = None, -1
    for xa, xb in zip(xs, xs[1:]):
        covered = [False] * H
        for x0, y0, x1, y1 in kept:
            if x0 < xb and x1 > xa:
                for y in range(y0, y1):
                    covered[y] = True
        y = 0
        while y < H:
            if covered[y]:
                y += 1
                continue
            start = y
            while y < H and not covered[y]:
                y += 1
            side = min(xb - xa, y - start)
            if side >= best_side:
                best, best_side = (xa, start, xb, y), side
    if best_side > min_px:
        return best, best_side
    return None, best_side


def overlaps(r, b):
    return r[0] < b[2] and b[0] < r[2] and r[1] < b[3] and b[1] < r[3]


def test_hand_example_box_on_the_left():
    d = periphery_crop(np.array([[0, 0, 10, 32]]), 32, 32, 8)
    assert d.ok and d.rect == (10, 0, 32, 32) and d.side == 22 and d.pixel_box() == (10, 0, 32, 32)


def test_hand_example_two_boxes_tie_goes_to_last_candidate():
    # intervals [0,10] (box 0 covers y 0..20 -> gap 20..30) and [10,20] (box 1 covers 10..30 -> gap 0..10)
    boxes = np.array([[0, 0, 10, 20], [10, 10, 20, 30]])
    cands = periphery_candidates(boxes, 20, 30)
    assert cands == [(0, 20, 10, 30), (10, 0, 20, 10)]
    d = periphery_crop(boxes, 20, 30, 5)
    assert d.rect == (10, 0, 20, 10)  # both have shorter side 10: the later one wins


def test_strictly_greater_than_min_crop():
    boxes = np.array([[0, 0, 22, 32]])  # free strip of width 10
    assert periphery_crop(boxes, 32, 32, 9.99).ok
    d = periphery_crop(boxes, 32, 32, 10)
    assert not d.ok and d.reason == "too_small" and d.side == 10


def test_out_of_image_boxes_are_counted_and_clipped():
    kept, n_out, n_clip = clip_boxes(np.array([[40, 0, 50, 10], [-5, -5, 10, 10], [2, 2, 4, 4]]), 32, 32)
    assert n_out == 1 and n_clip == 1
    assert kept.tolist() == [[0, 0, 10, 10], [2, 2, 4, 4]]
    kept, n_out, _ = clip_boxes(np.array([[3, 5, 3, 9]]), 32, 32)  # zero width: dropped, not an error
    assert len(kept) == 0 and n_out == 0
    d = periphery_crop(np.array([[40, 0, 50, 10]]), 32, 32, 8)
    assert not d.ok and d.reason == "no_boxes" and d.boxes_outside == 1


def test_corner_crop_bottom_left():
    d = corner_crop(100, 50, 0.3)
    assert d.pixel_box() == (0, 35, 30, 50)


def _original_corner_box(W: int, H: int, frac: float) -> tuple[int, int, int, int]:
    """The original's crop_xfrm: height = int(frac*vert), width = int(frac*horiz),
    crop(top=vert-height, left=0), as a PIL box."""
    height, width = int(frac * H), int(frac * W)
    return (0, H - height, width, H)


def test_corner_crop_truncates_as_the_original():
    from PIL import Image
    from torchvision.transforms import functional as F

    # 0.3*W has a fractional part >= 0.5 for these sizes: rounding would differ by a pixel
    for W, H, frac in ((375, 500, 0.3), (5, 12, 0.3), (333, 211, 0.3), (17, 29, 0.45), (500, 375, 0.3)):
        assert corner_crop(W, H, frac).pixel_box() == _original_corner_box(W, H, frac)
        im = Image.fromarray(np.arange(W * H * 3, dtype=np.uint8).reshape(H, W, 3))
        h, w = int(frac * H), int(frac * W)
        orig = F.crop(im, top=H - h, left=0, height=h, width=w)
        assert np.array_equal(np.asarray(im.crop(corner_crop(W, H, frac).pixel_box())), np.asarray(orig))
    assert corner_crop(375, 500, 0.3).pixel_box() == (0, 350, 112, 500)  # int(112.5) = 112


def test_default_min_crop_belongs_to_the_dataset(tmp_path):
    import json

    from dejavu.data.synth import SynthConfig, generate

    # ImageNet (no dataset description): 100 px of the image, whatever the model resolution
    (tmp_path / "imnet" / "train").mkdir(parents=True)
    assert default_min_crop_px(tmp_path / "imnet" / "train") == 100 and default_min_crop_px() == 100
    # a generated dataset records its own value in synth.json
    root = generate(tmp_path / "s", SynthConfig(classes=2, per_class=2, size=48))
    assert json.loads((root / "synth.json").read_text())["min_crop_px"] == 12
    assert default_min_crop_px(root / "train") == 12
    root = generate(tmp_path / "s2", SynthConfig(classes=2, per_class=2, size=32, min_crop_px=5))
    assert default_min_crop_px(root / "train") == 5
    # older synthetic datasets (no recorded value): the generator's rule from their size
    meta = json.loads((root / "synth.json").read_text())
    del meta["min_crop_px"]
    (root / "synth.json").write_text(json.dumps(meta))
    assert default_min_crop_px(root / "train") == 8


coord = st.integers(min_value=-8, max_value=40)


@st.composite
def scenes(draw):
    W = draw(st.integers(8, 36))
    H = draw(st.integers(8, 36))
    n = draw(st.integers(1, 6))
    boxes = []
    for _ in range(n):
        x0, x1 = sorted((draw(coord), draw(coord)))
        y0, y1 = sorted((draw(coord), draw(coord)))
        boxes.append((x0, y0, x1 + draw(st.integers(0, 1)), y1 + draw(st.integers(0, 1))))
    if draw(st.booleans()):  # nested / touching / duplicated boxes
        x0, y0, x1, y1 = boxes[0]
        boxes.append((x0 + 1, y0 + 1, max(x0 + 1, x1 - 1), max(y0 + 1, y1 - 1)))
        boxes.append((x1, y0, x1 + 3, y1))
        boxes.append(boxes[0])
    return W, H, boxes, draw(st.integers(0, 6))


@settings(max_examples=300, deadline=None)
@given(scenes())
def test_periphery_matches_slow_reference_and_properties(scene):
    W, H, boxes, min_px = scene
    d = periphery_crop(np.array(boxes, dtype=float), W, H, min_px)
    ref, _ref_side = slow_periphery(boxes, W, H, min_px)
    assert (d.rect is None) == (ref is None)
    if ref is not None:
        assert tuple(int(v) for v in d.rect) == ref
    kept, _, _ = clip_boxes(np.array(boxes, dtype=float), W, H)
    if d.ok:
        x0, y0, x1, y1 = d.rect
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        assert not any(overlaps(d.rect, b) for b in kept)
        assert d.side > min_px
        for c in periphery_candidates(kept, W, H):
            assert min(c[2] - c[0], c[3] - c[1]) <= d.side
            assert not any(overlaps(c, b) for b in kept)


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_largest_empty_is_box_free_and_at_least_as_good(scene):
    W, H, boxes, _ = scene
    p = periphery_crop(np.array(boxes, dtype=float), W, H, 0)
    e = largest_empty_crop(np.array(boxes, dtype=float), W, H, 0)
    kept, _, _ = clip_boxes(np.array(boxes, dtype=float), W, H)
    assert e.side >= p.side
    if e.ok:
        assert not any(overlaps(e.rect, b) for b in kept)
        x0, y0, x1, y1 = e.rect
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H


def test_no_attackable_image_named_by_the_caller(synth_small, partition_small):
    """One check for every stage: with ``what`` an empty result is refused naming the images
    and the threshold; without it the empty crops come back (counted)."""
    import pytest

    from dejavu import DejavuError
    from dejavu.attack.config import AttackConfig
    from dejavu.attack.crops import compute_crops
    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.partition import Partition

    index = scan_imagefolder(synth_small / "train")
    idx, ann = Partition.load(partition_small).load_set(10, "bbox_A")[:5], synth_small / "bboxes" / "Annotation"
    empty = compute_crops(index, ann, idx, AttackConfig(), 10_000)
    assert len(empty.indices) == 0 and empty.counts["unattackable"] == 5
    with pytest.raises(DejavuError, match=r"audit set bbox_A: no attackable image out of 5 .*min_crop_px 10000"):
        compute_crops(index, ann, idx, AttackConfig(), 10_000, what="audit set bbox_A")
    assert len(compute_crops(index, ann, idx, AttackConfig(), 1, what="set A").indices) > 0
