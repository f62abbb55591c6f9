"""Pascal-VOC bounding boxes (ImageNet's ``Annotation/<wnid>/<wnid>_<n>.xml``).

Parsed with defusedxml: annotation files come from outside, and an XML bomb or
external entity must not be able to hurt the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as ET
import numpy as np
from defusedxml import DefusedXmlException

from dejavu import DejavuError


class AnnotationError(DejavuError):
    """A malformed or unreadable annotation file."""


@dataclass(frozen=True)
class Annotation:
    """Boxes of one image. ``boxes`` is ``(n, 4)`` float64 ``xmin, ymin, xmax, ymax`` in pixels."""

    path: Path
    boxes: np.ndarray
    width: int | None = None
    height: int | None = None
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.boxes)


def _num(node, tag: str, path: Path) -> float:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{path}: <bndbox> without <{tag}>")
    try:
        v = float(child.text.strip())
    except ValueError:
        raise AnnotationError(f"{path}: <{tag}> is not a number: {child.text.strip()!r}") from None
    if not math.isfinite(v):  # nan passes every "inverted box" and "outside" test
        raise AnnotationError(f"{path}: <{tag}> is not a finite number: {child.text.strip()!r}")
    return v


def _size(size, tag: str, path: Path) -> int | None:
    """``<size><width|height>``: a whole number >= 0 (0 or absent: unknown, None)."""
    text = (size.findtext(tag) or "").strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 0 and v == int(v)):
        raise AnnotationError(f"{path}: <size><{tag}> is not a whole number >= 0: {text[:40]!r}")
    return int(v) or None


def read_voc_xml(path: str | Path) -> Annotation:
    """Read every ``<object><bndbox>`` of a VOC file, plus ``<size>`` when present.

    Raises :class:`AnnotationError` (one line naming the file) for a missing file,
    malformed XML, a non-numeric or non-finite coordinate, a bad ``<size>`` or an inverted box. A file with no
    ``<object>`` gives an empty ``(0, 4)`` array (the caller decides).
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ParseError as e:
        raise AnnotationError(f"{path}: malformed XML ({e})") from None
    except DefusedXmlException as e:
        raise AnnotationError(f"{path}: refused unsafe XML ({type(e).__name__})") from None
    width = height = None
    size = root.find("size")
    if size is not None:
        width, height = _size(size, "width", path), _size(size, "height", path)
    boxes, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            raise AnnotationError(f"{path}: <object> without <bndbox>")
        x0, y0, x1, y1 = (_num(bb, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise AnnotationError(f"{path}: inverted box ({x0}, {y0}, {x1}, {y1})")
        boxes.append((x0, y0, x1, y1))
        names.append((obj.findtext("name") or "").strip())
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return Annotation(path=path, boxes=arr, width=width, height=height, names=tuple(names))


def voc_xml_string(
    filename: str, folder: str, width: int, height: int, boxes: list[tuple[int, int, int, int]], name: str
) -> str:
    """A VOC annotation in ImageNet's style (used by the synthetic generator).

    Args:
        filename: the image's file name (without extension, as ImageNet's files have).
        folder: the class folder (wnid).
        width: image width in pixels.
        height: image height in pixels.
        boxes: ``(xmin, ymin, xmax, ymax)`` pixel boxes, one ``<object>`` each.
        name: the class name written in every ``<object><name>``.

    Returns:
        The XML text (no escaping: names and file names must be plain).
    """
    objs = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n"
        f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for (x0, y0, x1, y1) in boxes
    )
    return (
        f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
        f"\t<source>\n\t\t<database>dejavu synthetic</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objs}</annotation>\n"
    )
