"""The attack decodes every image in full by default, as the original.

Its neighbour rows are compared with an independent computation written here: PIL full
decode, the original's torchvision evaluation transform, the models' forward in fp32 and a
brute-force float64 nearest-neighbour search. The images are 96 px and the evaluation
resize target 37 px, so a draft (reduced) decode would apply to every public image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dejavu.attack.run import AttackConfig, attack
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.data.synth import SynthConfig, generate
from dejavu.partition import partition
from dejavu.ssl.model import ModelSpec, SSLModel

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_checkpoint

S = 32  # model resolution: resize to round(256/224 * 32) = 37, centre-crop 32


@pytest.fixture(scope="module")
def big_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth96")
    generate(root, SynthConfig(classes=4, per_class=30, size=96, annotated_fraction=0.5, seed=3), force=True)
    part = tmp_path_factory.mktemp("part96")
    partition(DataPaths.resolve(data=root), [5], part, force=True)
    idx = scan_imagefolder(root / "train")
    ck = tmp_path_factory.mktemp("ck96")
    a = make_checkpoint(ck / "a.pth", idx, "A", 5, seed=1)
    b = make_checkpoint(ck / "b.pth", idx, "B", 5, seed=2)
    return root, part, a, b


def _model(path: Path) -> SSLModel:
    state = torch.load(path, weights_only=True)
    m = SSLModel(ModelSpec("smallcnn", state["config"]["projector"], 0))
    m.load_state_dict(state["model"])
    return m.eval()


def _independent_embed(model: SSLModel, paths: list[Path], boxes) -> np.ndarray:
    """Full PIL decode (+ crop) and the original's eval transform, one fp32 forward."""
    tf = T.Compose(
        [
            T.Resize(round(256 / 224 * S), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(S),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    xs = []
    for p, box in zip(paths, boxes):
        with Image.open(p) as im:
            img = im.convert("RGB")
        xs.append(tf(img if box is None else img.crop(tuple(int(v) for v in box))))
    with torch.no_grad():
        return model.embed(torch.stack(xs), "projector").double().numpy()


def _knn(q: np.ndarray, pub: np.ndarray, k: int) -> np.ndarray:
    d = ((q[:, None, :] - pub[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]  # ties: the smaller public position first


def test_attack_neighbours_equal_an_independent_full_decode(big_images, tmp_path):
    root, part, a, b = big_images
    cfg = AttackConfig(npc=5, k=10, k_attk=5, n_boot=0, image_size=S, device="cpu", knn="torch")
    res = attack(a, b, part, DataPaths.resolve(data=root), tmp_path / "exact", cfg, cache_dir="")
    assert res.results["config"]["decode"] == "exact"
    assert res.results["config"]["forward_precision"] == "fp32"
    # the primary endpoint is named; checkpoints without seeds: design unknown
    assert res.results["primary_endpoint"]["top"] == "top1" and res.results["primary_endpoint"]["p"] == "20"
    assert res.results["design"]["design"] == "unknown"
    out = tmp_path / "exact"
    public = np.load(out / "public_idxs.npy")
    idx = scan_imagefolder(root / "train")
    assert min(Image.open(idx.path(int(public[0]))).size) >= 2 * round(256 / 224 * S)  # draft would apply
    models = {"A": _model(a), "B": _model(b)}
    pub_emb = {
        x: _independent_embed(m, [idx.path(int(i)) for i in public], [None] * len(public)) for x, m in models.items()
    }
    rows = 0
    for y in "AB":
        attk = np.load(out / f"A_attk_{y}_attk_idxs.npy")
        boxes = np.load(out / f"crops_{y}.npy")
        for x in "AB":
            q = _independent_embed(models[x], [idx.path(int(i)) for i in attk], boxes)
            want = public[_knn(q, pub_emb[x], 10)]
            got = np.load(out / f"{x}_attk_{y}_neighb_idxs.npy")
            np.testing.assert_array_equal(got, want, err_msg=f"{x}_attk_{y}")
            rows += len(got)
    assert rows >= 20


def test_draft_decode_is_opt_in_recorded_and_keyed_apart(big_images, tmp_path):
    root, part, a, b = big_images
    paths, cache = DataPaths.resolve(data=root), tmp_path / "cache"
    base = dict(npc=5, k=10, k_attk=5, n_boot=0, image_size=S, device="cpu")
    exact = attack(a, b, part, paths, tmp_path / "exact", AttackConfig(**base), cache_dir=cache)
    draft = attack(a, b, part, paths, tmp_path / "draft", AttackConfig(**base, decode="draft"), cache_dir=cache)
    assert draft.results["config"]["decode"] == "draft"
    assert draft.results["embed_cache"]["hit"] == {"A": False, "B": False}  # not the exact entries
    keys = [json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))]
    assert sorted(k["decode"] for k in keys) == ["pil-draft-ge-resize"] * 2 + ["pil-full"] * 2
    assert {k["precision"] for k in keys} == {"fp32"}
    # the reduced decode gives other public embeddings (other pixels)
    pub = {
        k["decode"]: np.load(cache / f"{k['key']}.npy")
        for k in keys
        if k["checkpoint_sha256"] == keys[0]["checkpoint_sha256"]
    }
    assert not np.array_equal(pub["pil-full"], pub["pil-draft-ge-resize"])
    assert exact.results["config"]["decode"] == "exact"
