"""Results that would be wrong without any error (issue 25): two writers in one attack
folder, NaN box coordinates, models of another partition, non-finite weights and
embeddings, a dataset walk that lists an image twice, 16-bit images. Each is refused
with one line naming the file and the problem, or decoded correctly."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from robustness_cli import (
    CHILD,
    assert_one_line_error,
    attack_args,
    attack_inprocess,
    child_env,
    main_inprocess,
    run_cli,
)

from dejavu.io import LOCK_NAME

# ------------------------------------------------------------------ 1. one writer per attack folder


def _wait_for(path, proc, timeout=120.0):
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the first attack ended before the pause point: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            pytest.fail("the first attack never reached the pause point")
        time.sleep(0.05)


def test_two_attacks_into_one_folder_at_once(corpus, tmp_path, capsys):
    """The first attack is paused in the middle of writing its arrays; a second attack into
    the same --out (with and without --force) is refused, naming the first; the first then
    ends normally and leaves no lock behind."""
    out, flag = tmp_path / "att", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, str(CHILD), *attack_args(corpus, out)],
        env=child_env(DEJAVU_TEST_HOLD_AT=f"crops_A.npy:{flag}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(tmp_path / "go.reached", first)
        assert (out / LOCK_NAME).exists()
        for extra in ([], ["--force"]):
            second = main_inprocess(capsys, *attack_args(corpus, out), *extra)  # this process: a second writer
            assert_one_line_error(second, str(out), "in use by another dejavu process", f"pid {first.pid}", "attack")
        assert not (out / "results.json").exists()
    finally:
        flag.touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["counts"]["public"] > 0 and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ 2. non-finite numbers in annotations

BOX_XML = (
    "<annotation><size><width>{w}</width><height>32</height></size><object><name>n0</name><bndbox>"
    "<xmin>8</xmin><ymin>0</ymin><xmax>{x1}</xmax><ymax>32</ymax></bndbox></object></annotation>"
)


@pytest.mark.parametrize("x1", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_non_finite_box_coordinate_is_an_annotation_error(tmp_path, x1):
    """A NaN xmax passed every box test and the 'background' crop held the object."""
    from test_inputs import _crop_setup

    from dejavu.attack.run import AttackConfig, compute_crops

    index, ann = _crop_setup(tmp_path, {0: BOX_XML.format(w=32, x1=x1), 1: [(8, 0, 24, 32)]})
    sc = compute_crops(index, ann, np.arange(2), AttackConfig(), min_crop_px=4)
    assert list(sc.indices) == [1] and sc.counts["annotation_errors"] == 1
    assert sc.errors == [f"{ann / 'n0' / 'n0_0.xml'}: <xmax> is not a finite number: {x1!r}"]


@pytest.mark.parametrize("w", ["nan", "inf", "-3", "1e999", "12.5"])
def test_bad_image_size_in_annotation(tmp_path, w):
    from dejavu.data.annotations import AnnotationError, read_voc_xml

    p = tmp_path / "a.xml"
    p.write_text(BOX_XML.format(w=w, x1=20))
    with pytest.raises(AnnotationError, match=rf"^{p}: <size><width> is not a whole number >= 0"):
        read_voc_xml(p)


# ------------------------------------------------------------------ 4. non-finite weights and embeddings


def _damaged_checkpoint(corpus, dst, how: str):
    """A copy of A.pth with NaN weights (``nan``) or finite weights whose projector output
    overflows float32 to inf (``overflow``)."""
    import torch

    from dejavu.io import atomic_torch_save

    ck = torch.load(corpus / "ckpt" / "A.pth", weights_only=True)
    sd = ck["model"]
    if how == "nan":
        for v in sd.values():
            if v.is_floating_point():
                v.fill_(float("nan"))
    else:
        last = max(
            (k for k in sd if k.startswith("projector.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1])
        )
        sd[last].fill_(3e38)
        for k in sd:  # inputs of the last layer >= 10: 3e38 * 10 * 32 overflows float32
            if k.startswith("projector.") and k.endswith(".bias"):
                sd[k].fill_(10.0)
    return atomic_torch_save(dst, ck)


def test_nan_weights_refused(corpus, tmp_path, capsys):
    a = _damaged_checkpoint(corpus, tmp_path / "nan.pth", "nan")
    proc = main_inprocess(capsys, *attack_args(corpus, tmp_path / "att", a=a))
    assert_one_line_error(proc, str(a), "holds NaN or inf values")
    assert not (tmp_path / "att").exists()


def test_model_with_inf_embeddings_gives_no_score(corpus, tmp_path, capsys):
    """Finite weights whose embeddings overflow: the KNN refuses them (every distance NaN:
    the 'neighbours' would be the first public images)."""
    a = _damaged_checkpoint(corpus, tmp_path / "big.pth", "overflow")
    proc = main_inprocess(capsys, *attack_args(corpus, tmp_path / "att", a=a))
    assert_one_line_error(proc, "is not finite (NaN or inf)", "no neighbours computed")
    assert not (tmp_path / "att" / "results.json").exists()


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_refuses_non_finite_rows(backend):
    from dejavu import DejavuError
    from dejavu.attack.knn import knn

    rng = np.random.default_rng(0)
    q, pub = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(40, 4)).astype(np.float32)
    pub[33, 2] = np.inf
    with pytest.raises(DejavuError, match=r"^knn: public set: embedding row 33 is not finite"):
        knn(q, pub, 3, backend=backend, block_p=16)
    pub[33, 2] = 0
    q[4, 0] = np.nan
    with pytest.raises(DejavuError, match=r"^knn: queries: embedding row 4 is not finite"):
        knn(q, pub, 3, backend=backend)


def test_nan_in_embedding_cache_never_used(corpus, tmp_path, capsys):
    """NaN written into a cache entry, its digest updated to match: still not used."""
    from dejavu.attack.embed import content_digest

    cache = tmp_path / "cache"
    ref = attack_inprocess(corpus, tmp_path / "a0", cache_dir=cache)
    npy = sorted(cache.glob("*.npy"))[0]
    arr = np.load(npy)
    arr[len(arr) // 2] = np.nan
    np.save(npy, arr)
    meta = npy.with_suffix(".json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "content_sha256": content_digest(np.load(npy))}))
    capsys.readouterr()
    again = attack_inprocess(corpus, tmp_path / "a1", cache_dir=cache)
    assert f"{npy}: embedding cache entry not used (holds NaN or inf values)" in capsys.readouterr().err
    assert again.results["metrics"] == ref.results["metrics"]


# ------------------------------------------------------------------ 3. models of another partition


def test_model_trained_on_another_partition_refused(corpus, tmp_path, capsys):
    """Model A records a training index that is not the partition's train_A (here: B's,
    standing for the train_A of another partition of the same dataset)."""
    from robustness_cli import make_checkpoint

    from dejavu.data.imagefolder import scan_imagefolder

    index = scan_imagefolder(corpus / "data" / "train")
    other = np.load(corpus / "part" / "4_per_class" / "train_B.npy")
    a = make_checkpoint(tmp_path / "A.pth", index, "A", 4, seed=1, train=other)
    proc = main_inprocess(capsys, *attack_args(corpus, tmp_path / "att", a=a))
    assert_one_line_error(proc, str(a), "trained on another index", "4_per_class/train_A.npy")
    assert not (tmp_path / "att").exists()


# ------------------------------------------------------------------ 5. the dataset walk


def test_symlinked_class_folder_is_followed_once(data_copy, tmp_path):
    """A class folder that is a symlink (ImageFolder follows it) gives the same index."""
    import shutil

    from dejavu.data.imagefolder import scan_imagefolder

    ref = scan_imagefolder(data_copy / "train")
    cls = ref.classes[1]
    shutil.move(data_copy / "train" / cls, tmp_path / "elsewhere")
    (data_copy / "train" / cls).symlink_to(tmp_path / "elsewhere")
    got = scan_imagefolder(data_copy / "train")
    assert got.relpaths == ref.relpaths and got.fingerprint == ref.fingerprint


@pytest.mark.parametrize("link", ["loop_to_root", "loop_to_self", "second_link", "image_link"])
def test_walk_refuses_what_it_would_list_twice(data_copy, link):
    """A symlink loop listed 704 images from 64 files, copies of training images in the
    public set: each is now one line naming the link."""
    train = data_copy / "train"
    n0, n1 = sorted(p for p in train.iterdir())[:2]
    where = {
        "loop_to_root": (n0 / "loop", ".."),
        "loop_to_self": (n0 / "sub" / "again", ".."),
        "second_link": (n1 / "n0copy", f"../{n0.name}"),
        "image_link": (n1 / "zz_copy.JPEG", f"../{n0.name}/{min(p.name for p in n0.iterdir())}"),
    }
    path, target = where[link]
    path.parent.mkdir(exist_ok=True)
    path.symlink_to(target)
    _assert_scan_refused(train, str(path), "listed twice")


@pytest.mark.parametrize("kind", ["fifo", "broken_link"])
def test_image_name_that_is_not_a_file(corpus, data_copy, tmp_path, capsys, kind):
    """A FIFO named .JPEG in the public set blocked the attack forever."""
    import os

    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.partition import Partition

    p = scan_imagefolder(data_copy / "train").path(int(Partition.load(corpus / "part").attack_public()[0]))
    p.unlink()
    if kind == "fifo":
        os.mkfifo(p)
    else:
        p.symlink_to(tmp_path / "gone.JPEG")
    args = attack_args(corpus, tmp_path / "att", data=data_copy)
    # the FIFO in a child process: where it is opened, it blocks (killed at the timeout)
    proc = run_cli(*args, timeout=60) if kind == "fifo" else main_inprocess(capsys, *args)
    assert_one_line_error(proc, str(p), "not a regular file")
    assert not (tmp_path / "att").exists()


def test_non_utf8_class_folder_name(data_copy):
    import os

    bad = os.path.join(os.fsencode(data_copy / "train"), b"n\xff\xfe")
    os.rename(os.fsencode(min((data_copy / "train").iterdir())), bad)
    msg = _assert_scan_refused(data_copy / "train", "n\\xff\\xfe", "not valid UTF-8")
    msg.encode("utf-8")  # printable


def _assert_scan_refused(train, *needles: str) -> str:
    from dejavu import DejavuError
    from dejavu.data.imagefolder import scan_imagefolder

    with pytest.raises(DejavuError) as e:
        scan_imagefolder(train)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


# ------------------------------------------------------------------ 6. 16-bit images


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grey_image_decodes_to_its_grey(tmp_path, fmt):
    """PIL clips I;16 at 255 in convert("RGB"): a mid-grey 16-bit PNG decoded as white."""
    from PIL import Image

    from dejavu.attack.embed import ImageCrops
    from dejavu.data.dataset import load_rgb
    from dejavu.data.fastjpeg import load_rgb_reduced
    from dejavu.data.transforms import eval_transform

    a = np.tile(np.linspace(0, 65535, 64), (48, 1)).astype(np.uint16)  # a horizontal ramp, black to white
    a[:, 20:40] = 32768  # a mid-grey band
    p = tmp_path / f"n0_1.{fmt.lower()}"
    Image.fromarray(a).save(p, format=fmt)
    assert Image.open(p).mode.startswith("I;16")
    want = np.rint(a / 257.0).astype(np.uint8)
    for im in (load_rgb(p), load_rgb_reduced(p, 16)):
        got = np.asarray(im)
        assert im.mode == "RGB" and np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)
    assert abs(float(np.asarray(load_rgb(p))[:, 20:40].mean()) - 127.5) < 1
    x, _ = ImageCrops([p], None, eval_transform(32))[0]  # what the attack embeds
    assert float(x.std()) > 0.5  # a ramp, not a white (constant) image


def test_audited_model_trained_on_other_images_refused(corpus, tmp_path):
    """The audit of bbox_A (inside train_A) with a model recording train_B: it never saw them."""
    from robustness_cli import make_checkpoint

    from dejavu import DejavuError
    from dejavu.audit.config import AuditConfig
    from dejavu.audit.run import audit
    from dejavu.data.imagefolder import DataPaths, scan_imagefolder

    index = scan_imagefolder(corpus / "data" / "train")
    other = np.load(corpus / "part" / "4_per_class" / "train_B.npy")
    m = make_checkpoint(tmp_path / "M.pth", index, "A", 4, seed=1, train=other)
    with pytest.raises(DejavuError, match=rf"^{m}: was trained on another index .* than .*4_per_class/train_A.npy"):
        audit(
            m,
            corpus / "part",
            DataPaths.resolve(data=corpus / "data"),
            tmp_path / "aud",
            AuditConfig(npc=4, device="cpu"),
        )
    assert not (tmp_path / "aud").exists()


def test_fifo_in_a_validation_control_folder(tmp_path):
    """The validation images of a control are listed by their own scan: regular files only."""
    import os
    import threading

    from PIL import Image

    from dejavu import DejavuError
    from dejavu.data.valset import scan_valset

    (tmp_path / "val" / "n0").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "val" / "n0" / "n0_1.JPEG")
    os.mkfifo(tmp_path / "val" / "n0" / "n0_2.JPEG")
    box: dict = {}

    def scan():
        try:
            scan_valset(tmp_path / "val", tmp_path / "val", ["n0"])
        except DejavuError as e:
            box["err"] = str(e)

    t = threading.Thread(target=scan, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock a reader before failing
        with open(tmp_path / "val" / "n0" / "n0_2.JPEG", "w"):
            pass
        pytest.fail("the scan opened the FIFO")
    assert (
        box["err"]
        == f"{tmp_path / 'val' / 'n0' / 'n0_2.JPEG'}: not a regular file (a FIFO, socket, device or broken link); remove it"
    )
