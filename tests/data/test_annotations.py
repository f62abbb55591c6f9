import numpy as np
import pytest

from dejavu.data.annotations import AnnotationError, read_voc_xml, voc_xml_string

TWO = """<annotation><size><width>500</width><height>375</height><depth>3</depth></size>
<object><name>n1</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>220</ymax></bndbox></object>
<object><name>n1</name><bndbox><xmin>300</xmin><ymin>5</ymin><xmax>499</xmax><ymax>370</ymax></bndbox></object>
</annotation>"""


def test_multiple_objects(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(TWO)
    a = read_voc_xml(p)
    assert a.width == 500 and a.height == 375
    np.testing.assert_array_equal(a.boxes, [[10, 20, 110, 220], [300, 5, 499, 370]])
    assert a.names == ("n1", "n1")


def test_no_objects_is_empty(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text("<annotation><size><width>5</width><height>5</height></size></annotation>")
    a = read_voc_xml(p)
    assert a.boxes.shape == (0, 4) and len(a) == 0


@pytest.mark.parametrize(
    "text,msg",
    [
        ("<annotation><object><bndbox><xmin>1</xmin>", "malformed XML"),
        ("<annotation><object><name>x</name></object></annotation>", "without <bndbox>"),
        (
            "<annotation><object><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax>"
            "</bndbox></object></annotation>",
            "not a number",
        ),
        (
            "<annotation><object><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax>"
            "</bndbox></object></annotation>",
            "inverted",
        ),
        (
            "<annotation><object><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>9</xmax></bndbox></object></annotation>",
            "without <ymax>",
        ),
    ],
)
def test_malformed(tmp_path, text, msg):
    p = tmp_path / "bad.xml"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=msg) as e:
        read_voc_xml(p)
    assert str(p) in str(e.value)


def test_missing(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        read_voc_xml(tmp_path / "none.xml")


def test_xml_bomb_refused(tmp_path):
    p = tmp_path / "bomb.xml"
    p.write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        "<annotation>&lol2;</annotation>"
    )
    with pytest.raises(AnnotationError, match="unsafe"):
        read_voc_xml(p)


def test_roundtrip_writer(tmp_path):
    p = tmp_path / "w.xml"
    p.write_text(voc_xml_string("f", "n0", 32, 30, [(1, 2, 3, 4), (5, 6, 7, 8)], "n0"))
    a = read_voc_xml(p)
    assert (a.width, a.height) == (32, 30)
    np.testing.assert_array_equal(a.boxes, [[1, 2, 3, 4], [5, 6, 7, 8]])
