"""report.html renders from a run folder of generated results; everything it shows exists."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

from report_data import write_attack_arrays, write_attack_result, write_probe_result

from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder
from dejavu.report.html import rank_examples, read_examples


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "a":
            self.links.append(a["href"])


def _run(tmp_path, synth_small, partition_small) -> Path:
    run = tmp_path / "runs" / "demo"
    shutil.copytree(partition_small, run / "partition")
    fp = scan_imagefolder(synth_small / "train").fingerprint.to_dict()
    for ep in (5, 10):
        write_attack_result(run / "attack" / f"ep{ep}" / "vicreg_10pc", npc=10, epoch=ep, fingerprint=fp)
        write_probe_result(run / "probe" / f"vicreg_10pc_{ep}ep", npc=10, epoch=ep)
    write_attack_arrays(run / "attack" / "ep10" / "vicreg_10pc", synth_small, partition_small, npc=10)
    write_attack_result(run / "attack" / "ep10" / "vicreg_10pc_corner", npc=10, epoch=10, crop="corner", fingerprint=fp)
    rc = run / "rcdm" / "A" / "samples"
    rc.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(rc / "sample_0.png")
    return run


def test_report_renders_and_references_exist(synth_small, partition_small, tmp_path):
    run = _run(tmp_path, synth_small, partition_small)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    refs = _Refs()
    refs.feed(page)
    # headline: latest epoch, default variant, its score with CI, probe of the same epoch
    from report_data import fake_accs

    tgt, ref = fake_accs(10, 10)
    assert f"{100 * (tgt['20'] - ref['20']):+.1f} pts" in page and "95% CI" in page  # a difference: points
    assert "epoch 10" in page and "periphery/projector attack" in page
    assert f"top-1 {100 * (0.3 + 10 / 5000 + 10 / 10000):.1f}%" in page
    # every image is embedded; every link points to a file that exists
    assert refs.imgs and all(s.startswith("data:image/") for s in refs.imgs)
    assert refs.links and all((run / h).is_file() for h in refs.links)
    # figures (vs epoch) were drawn into plots/, galleries and RCDM are there
    assert (run / "plots" / "accuracy_vs_epoch_top1.png").is_file()
    assert "Most memorized examples" in page and "Most correlated examples" in page
    rows = read_examples(run / "attack" / "ep10" / "vicreg_10pc" / "examples.csv")
    top = rank_examples(rows, 6)
    n_cells = len(top["memorized"]) + len(top["correlated"])
    assert n_cells > 0 and page.count('class="example"') == n_cells
    assert page.count('class="nb ') == 2 * 5 * n_cells  # 5 neighbours under A and under B each
    assert re.search(r"crop \d+&times;\d+ px", page)  # crops recomputed from the stored boxes
    assert "RCDM reconstructions" in page and "sample_0.png" in page
    # no silent overwrite; --force redraws
    assert main(["report", str(run)]) == 1
    assert main(["report", str(run), "--force", "--examples", "2"]) == 0
    assert (run / "report.html").read_text().count('class="example"') <= 4


def test_rank_examples_orders_by_gap_and_min_conf(tmp_path):
    p = tmp_path / "examples.csv"
    p.write_text(
        "set,index,label,pred_target,pred_reference,conf_target,conf_reference,correct_target,"
        "correct_reference,quadrant\n"
        "A,1,0,0,1,-0.1,-2.0,1,0,memorized\nA,2,0,0,1,-0.5,-0.6,1,0,memorized\n"
        "B,3,1,1,1,-0.2,-0.3,1,1,correlated\nB,4,1,1,1,-0.05,-1.5,1,1,correlated\n"
        "B,5,1,0,0,-0.05,-0.1,0,0,unassociated\n"
    )
    r = rank_examples(read_examples(p), 5)
    assert [e.index for e in r["memorized"]] == [1, 2]
    assert [e.index for e in r["correlated"]] == [3, 4]


def test_report_errors(tmp_path):
    assert main(["report", str(tmp_path / "nope")]) == 1
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run")]) == 1
