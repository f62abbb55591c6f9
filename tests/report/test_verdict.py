"""The report opens with one verdict that reconciles the score, the held-out control (and its
size), the number of model pairs and the one-model test; differences are in points."""

from __future__ import annotations

from report_data import write_attack_result
from test_significance_report import _add_control, _seed_sweep

from dejavu.cli import main
from dejavu.io import atomic_write_json, read_json
from dejavu.report.collect import collect
from dejavu.report.plots import significance_table
from dejavu.report.verdict import overall


def _verdict(root):
    res = collect([root])
    head = max(res.attacks, key=lambda r: r.epoch)
    row = next(r for r in significance_table(res.attacks) if str(head.path) in r["files"]) if head.control else None
    return overall(head, row, res.audits)


def test_three_seed_pairs_decide_at_pair_level(tmp_path):
    v = _verdict(_seed_sweep(tmp_path / "run"))
    assert v.label == "memorization shown"
    assert (
        "over 3 model pairs (training seeds 0, 1, 2" in v.text
        and "unknown" not in v.text
        and "95% interval over pairs [" in v.text
    )
    assert "covers training randomness" in v.text and "pts" in v.text and "small" not in v.text


def test_one_pair_tiny_control_and_no_control(tmp_path):
    one = tmp_path / "one" / "attack" / "ep100"
    write_attack_result(one, epoch=100)
    _add_control(one, -0.228, se=0.15)  # the control scored -22.8 on a handful of crops
    res = read_json(one / "results.json")
    res["control"]["counts"] = {"A": {"attacked": 4, "bbox": 4}, "B": {"attacked": 5, "bbox": 5}}
    atomic_write_json(one / "results.json", res)
    v = _verdict(tmp_path / "one")
    assert v.label == "not established (one model pair)"
    assert "scores -22.8 pts" in v.text and "does not cover training randomness" in v.text
    assert "The control is small (A 4 and B 5 crops)" in v.text
    none = tmp_path / "none" / "attack" / "ep100"
    write_attack_result(none, epoch=100)
    v = _verdict(tmp_path / "none")
    assert v.label == "not established (no held-out control)" and "95% CI over examples [" in v.text


def test_report_opens_with_the_verdict_in_points_and_tables_scroll(tmp_path):
    root = _seed_sweep(tmp_path / "run")
    assert main(["report", str(root)]) == 0
    page = (root / "report.html").read_text()
    v = _verdict(root)
    assert page.index("<p class='verdict'><b>Verdict: memorization shown.</b>") < page.index("<h2>Headline</h2>")
    assert v.text.split(":")[0] in page
    head = max(collect([root]).attacks, key=lambda r: r.epoch)
    assert f"<td class='big'>{100 * head.score():+.1f} pts" in page  # a difference: points, not %
    assert "<th>score (pts)</th>" in page
    assert "overflow-x:auto" in page  # wide tables scroll instead of being clipped
    assert "dejavu report " in page and " UTC " in page  # provenance


def test_class_names_from_imagenet_synset_mapping(tmp_path):
    from dataclasses import dataclass

    from dejavu.report.html import class_names

    root = tmp_path / "imagenet"
    train = root / "ILSVRC" / "Data" / "CLS-LOC" / "train"
    train.mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
    )

    @dataclass
    class Index:
        root: object
        classes: list

    assert class_names(Index(train, ["n01440764", "n01443537", "n99"])) == ["tench", "goldfish", "n99"]


def test_no_bootstrap_says_so_instead_of_nan(tmp_path):
    d = tmp_path / "run" / "attack" / "ep100"
    write_attack_result(d, epoch=100)
    res = read_json(d / "results.json")
    res["metrics"]["top1"]["ci95"] = {"dejavu_score": [float("nan")] * 2, "dejavu_score_100": [float("nan")] * 2}
    atomic_write_json(d / "results.json", res)
    v = _verdict(tmp_path / "run")
    assert "(no CI: --bootstrap 0)" in v.text and "nan" not in v.text.lower()
    assert main(["report", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "n/a" not in page.split("<h2>Headline</h2>")[1].split("</table>")[0]
