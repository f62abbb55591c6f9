import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu import DejavuError
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths
from dejavu.partition import (
    InvariantError,
    NpcSplit,
    Partition,
    check_invariants,
    compute_partition,
    load_index_file,
    partition,
)


def _documented_order(items, rng):
    """DESIGN 2.2's order: the list permuted by the class's generator (None: as given)."""
    return items if rng is None else [items[j] for j in rng.permutation(len(items))]


def reference_partition(targets, annotated, npc, seed=None):
    """Independent, obviously-correct implementation of DESIGN 2.2 (loops over classes);
    ``seed``: each class's annotated, then other, images permuted by default_rng([seed, c])."""
    out = {k: [] for k in ("bbox_A", "bbox_B", "shared", "public")}
    for c in sorted(set(targets.tolist())):
        idx = [i for i in range(len(targets)) if targets[i] == c]
        rng = None if seed is None else np.random.default_rng([seed, c])
        bb = _documented_order([i for i in idx if annotated[i]], rng)
        nb = _documented_order([i for i in idx if not annotated[i]], rng)
        n = min(len(bb) // 2, npc)
        out["bbox_A"] += bb[:n]
        out["bbox_B"] += bb[n : 2 * n]
        out["shared"] += nb[: npc - n]
        out["public"] += bb[2 * n :] + nb[npc - n :]
    out["train_A"] = out["bbox_A"] + out["shared"]
    out["train_B"] = out["bbox_B"] + out["shared"]
    return {k: sorted(v) for k, v in out.items()}


@st.composite
def datasets(draw):
    n_classes = draw(st.integers(1, 6))
    targets, annotated = [], []
    for c in range(n_classes):
        n = draw(st.integers(0, 30))
        targets += [c] * n
        annotated += draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if not targets:
        targets, annotated = [0], [True]
    return np.array(targets), np.array(annotated)


@settings(max_examples=150, deadline=None)
@given(
    datasets(),
    st.lists(st.integers(1, 20), min_size=1, max_size=4, unique=True),
    st.one_of(st.none(), st.integers(0, 2**31)),
)
def test_matches_reference_and_invariants(data, npcs, seed):
    targets, annotated = data
    splits, val, per, without = compute_partition(targets, annotated, npcs, seed)
    check_invariants(splits, targets)
    for npc in npcs:
        ref = reference_partition(targets, annotated, npc, seed)
        for k, v in ref.items():
            assert splits[npc].sets[k].tolist() == v, (npc, k)
    # val set: subset of the biggest public set, balanced over classes that have public images
    public = splits[max(npcs)].sets["public"]
    assert np.isin(val, public).all()
    counts = np.bincount(targets[val], minlength=targets.max() + 1)
    has_public = np.bincount(targets[public], minlength=targets.max() + 1) > 0
    assert (counts[has_public] == per).all() and (counts[~has_public] == 0).all()
    assert sorted(without) == np.nonzero(~has_public)[0].tolist()


def test_short_classes_reported():
    targets = np.array([0] * 10 + [1] * 40 + [2] * 4)
    annotated = np.array([True] * 4 + [False] * 6 + [True] * 40 + [True, False, False, False])
    splits, *_ = compute_partition(targets, annotated, [5])
    short = splits[5].short_classes
    assert [s["class"] for s in short] == [2]  # 0 annotated pairs + 3 shared < 5
    assert short[0]["bbox_A"] == 0 and short[0]["train_A"] == 3
    assert splits[5].bbox_limited == 2  # classes 0 (2 in bbox_A) and 2


def test_invariant_violations_raise():
    good, *_ = compute_partition(np.array([0] * 20), np.array([True] * 20), [3, 5])
    bad = {n: NpcSplit(n, {k: v.copy() for k, v in s.sets.items()}) for n, s in good.items()}
    bad[3].sets["bbox_B"] = np.append(bad[3].sets["bbox_B"], bad[3].sets["bbox_A"][0])
    with pytest.raises(InvariantError, match=r"bbox_A and bbox_B overlap \(e.g. index 0\)"):
        check_invariants(bad)
    bad = {n: NpcSplit(n, {k: v.copy() for k, v in s.sets.items()}) for n, s in good.items()}
    bad[5].sets["public"] = np.append(bad[5].sets["public"], bad[3].sets["train_A"][0])
    with pytest.raises(InvariantError, match="public"):
        check_invariants(bad)
    bad = {n: NpcSplit(n, {k: v.copy() for k, v in s.sets.items()}) for n, s in good.items()}
    bad[3].sets["bbox_B"] = bad[3].sets["bbox_B"][:-1]
    with pytest.raises(InvariantError, match=r"\|bbox_A\| != \|bbox_B\|"):
        check_invariants(bad, np.array([0] * 20))


def test_files_manifest_and_determinism(synth_small, tmp_path):
    paths = DataPaths.resolve(data=synth_small)
    r1 = partition(paths, [5, 10], tmp_path / "p1")
    r2 = partition(paths, [10, 5], tmp_path / "p2")
    for npc in (5, 10):
        for name in ("bbox_A", "bbox_B", "shared", "public", "train_A", "train_B"):
            a = np.load(tmp_path / "p1" / f"{npc}_per_class" / f"{name}.npy")
            b = np.load(tmp_path / "p2" / f"{npc}_per_class" / f"{name}.npy")
            assert a.dtype == np.int64 and np.array_equal(a, b)
    m = json.loads((tmp_path / "p1" / "manifest.json").read_text())
    assert m["fingerprint"]["id"] == r1.fingerprint.id == r2.fingerprint.id
    assert m["counts"]["10"]["bbox_A"] == 100 and m["counts"]["10"]["shared"] == 0
    assert m["attack_public"] == "10_per_class/public.npy"
    assert len(np.load(tmp_path / "p1" / "val_set.npy")) == 10 * m["val_set"]["per_class"]
    with pytest.raises(DejavuError, match="--force"):
        partition(paths, [5], tmp_path / "p1")
    p = Partition.load(tmp_path / "p1")
    assert np.array_equal(p.attack_public(), p.load_set(10, "public"))


def test_index_file_from_other_dataset(synth_small, tmp_path):
    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.data.synth import SynthConfig, generate

    partition(DataPaths.resolve(data=synth_small), [5], tmp_path / "p")
    other = generate(tmp_path / "other", SynthConfig(classes=2, per_class=20, size=16))
    oidx = scan_imagefolder(other / "train")
    with pytest.raises(DejavuError) as e:
        load_index_file(tmp_path / "p" / "5_per_class" / "train_A.npy", oidx)
    assert oidx.fingerprint.id in str(e.value) and "was made on dataset" in str(e.value)


def test_cli(synth_small, tmp_path, capsys):
    assert main(["partition", "--data", str(synth_small), "--per-class", "5,10", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "bbox_A" in out and "val_set" in out
    assert main(["partition", "--data", str(synth_small), "--per-class", "5", "--out", str(tmp_path / "p")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["partition", "--images", str(synth_small / "train"), "--out", str(tmp_path / "q")]) == 2
    assert main(["partition", "--data", str(synth_small), "--per-class", "x", "--out", str(tmp_path / "r")]) == 2
    assert main(["data", "info", str(synth_small), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_images"] == 600 and abs(info["annotated_fraction"] - 0.4) < 1e-9
    assert (
        main(["data", "synth", "--out", str(tmp_path / "s"), "--classes", "2", "--per-class", "3", "--size", "16"]) == 0
    )


def test_partition_and_synth_settings_follow_the_one_config_path(synth_small, tmp_path, capsys):
    """partition and data synth read --config FILE and --set as every stage: a YAML scalar
    per_class is a list of one, --set wins over the flag, a bad value is a usage error."""
    f = tmp_path / "p.yaml"
    f.write_text("per_class: 4\ncontrol: 2\n")
    out = tmp_path / "p"
    assert main(["partition", "--data", str(synth_small), "--config", str(f), "--out", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["per_class"] == [4] and m["control"]["per_class"] == 2
    args = ["partition", "--data", str(synth_small), "--per-class", "3", "--set", "per_class=4,5", "--force"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["per_class"] == [4, 5] and not (out / "control.npy").exists()
    assert main(["partition", "--data", str(synth_small), "--set", "control=-1", "--out", str(tmp_path / "x")]) == 2
    assert "control: expected a number of images per class >= 0" in capsys.readouterr().err
    s = tmp_path / "s"
    assert main(["data", "synth", "--out", str(s), "--set", "classes=2", "--per-class", "3", "--size", "16"]) == 0
    assert json.loads((s / "synth.json").read_text())["classes"] == 2
    assert main(["data", "synth", "--out", str(tmp_path / "t"), "--classes", "1"]) == 2
    assert "--classes must be >= 2" in capsys.readouterr().err


def test_control_set_aside_and_invariants(synth_small, tmp_path):
    """--control N: the first N annotated public images of each class, removed from every
    public set, never in a training set, split alternately into halves A and B."""
    from dejavu.data.imagefolder import annotated_mask, scan_imagefolder
    from dejavu.partition import check_control, set_aside_control

    paths = DataPaths.resolve(data=synth_small)
    plain = partition(paths, [5, 10], tmp_path / "plain")
    res = partition(paths, [5, 10], tmp_path / "p", control=3)
    index = scan_imagefolder(paths.images)
    ann = annotated_mask(index, paths.annotation_dir)
    ctrl = np.load(tmp_path / "p" / "control.npy")
    a, b = np.load(tmp_path / "p" / "control_A.npy"), np.load(tmp_path / "p" / "control_B.npy")
    # independent reference: first 3 annotated images of each class of the plain attack public
    # set, in the partition's order (the class's annotated images permuted by default_rng([0, c]))
    old_pub = set(plain.splits[10].sets["public"].tolist())
    want = []
    for c in range(10):
        bb = _documented_order(
            [i for i in range(len(index.targets)) if index.targets[i] == c and ann[i]], np.random.default_rng([0, c])
        )
        want.append(np.array([i for i in bb if i in old_pub][:3]))
    assert ctrl.tolist() == sorted(np.concatenate(want).tolist())
    assert a.tolist() == sorted(np.concatenate([w[0::2] for w in want]).tolist())
    assert b.tolist() == sorted(np.concatenate([w[1::2] for w in want]).tolist())
    assert ann[ctrl].all() and np.bincount(index.targets[ctrl], minlength=10).tolist() == [3] * 10
    for npc in (5, 10):
        for name in ("public", "train_A", "train_B"):
            assert not set(ctrl) & set(np.load(tmp_path / "p" / f"{npc}_per_class" / f"{name}.npy"))
        # the public set lost exactly the control, nothing else
        assert sorted(np.union1d(res.splits[npc].sets["public"], ctrl)) == sorted(plain.splits[npc].sets["public"])
    assert set(np.load(tmp_path / "p" / "val_set.npy")) <= set(res.splits[10].sets["public"])
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["control"]["counts"] == {"control": 30, "control_A": 20, "control_B": 10}
    p = Partition.load(tmp_path / "p")
    assert p.has_control and np.array_equal(p.control()["A"], a)
    assert not Partition.load(tmp_path / "plain").has_control
    with pytest.raises(DejavuError, match="no held-out control"):
        Partition.load(tmp_path / "plain").control()
    # invariants are enforced: a control image put back into a public or training set raises
    splits, *_ = compute_partition(index.targets, ann, [5], 0)
    c = set_aside_control(splits, index.targets, ann, 2, 0)
    splits[5].sets["train_B"] = np.append(splits[5].sets["train_B"], c.A[0])
    with pytest.raises(InvariantError, match=r"control overlaps 5_per_class/train_B"):
        check_control(splits, c)
    c.B = np.append(c.B, c.A[0])
    with pytest.raises(InvariantError, match="control_A and control_B overlap"):
        check_control(splits, c)
    # --force without --control leaves no stale control behind
    partition(paths, [5, 10], tmp_path / "p", force=True)
    assert not (tmp_path / "p" / "control.npy").exists() and not Partition.load(tmp_path / "p").has_control


def test_control_cli(synth_small, tmp_path, capsys):
    assert (
        main(
            [
                "partition",
                "--data",
                str(synth_small),
                "--per-class",
                "5",
                "--control",
                "2",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    assert "control: 20 held-out annotated images (2 per class" in capsys.readouterr().out
    assert (
        main(
            [
                "partition",
                "--data",
                str(synth_small),
                "--per-class",
                "5",
                "--control",
                "-1",
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 2
    )
    # more than the public set holds: every annotated public image, short classes reported
    assert (
        main(
            [
                "partition",
                "--data",
                str(synth_small),
                "--per-class",
                "10",
                "--control",
                "50",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["control"]["short_classes"] and m["control"]["counts"]["control"] < 500


def test_seeded_shuffle_split_recorded_and_reproducible(synth_small, tmp_path):
    """Issue 28.2: each class is cut in the order of a permutation seeded by the partition seed
    (recorded in the manifest): bbox_A is not the lowest-numbered half, the same seed gives the
    same files, another seed other sets; order=sorted gives the previous rule."""
    from dejavu.data.imagefolder import scan_imagefolder

    paths = DataPaths.resolve(data=synth_small)
    targets = scan_imagefolder(paths.images).targets
    r0 = partition(paths, [5, 10], tmp_path / "s0", control=2)
    again = partition(paths, [10, 5], tmp_path / "s0b", control=2)
    r7 = partition(paths, [5, 10], tmp_path / "s7", seed=7, control=2)
    old = partition(paths, [5, 10], tmp_path / "sorted", order="sorted", control=2)
    m = json.loads((tmp_path / "s0" / "manifest.json").read_text())
    assert (
        m["split"]["order"] == "shuffle" and m["split"]["seed"] == 0 and "default_rng([seed, c])" in m["split"]["rule"]
    )
    assert Partition.load(tmp_path / "s7").split["seed"] == 7
    assert Partition.load(tmp_path / "sorted").split == {
        "order": "sorted",
        "seed": None,
        "rule": old.manifest["split"]["rule"],
    }
    for name in ("bbox_A", "bbox_B", "shared", "public", "train_A", "train_B"):
        assert np.array_equal(r0.splits[10].sets[name], again.splits[10].sets[name])
    assert not np.array_equal(r0.splits[10].sets["bbox_A"], r7.splits[10].sets["bbox_A"])
    assert not np.array_equal(r0.control.A, r7.control.A)
    a, b = r0.splits[10].sets["bbox_A"], r0.splits[10].sets["bbox_B"]
    interleaved = [c for c in range(10) if a[targets[a] == c].max() > b[targets[b] == c].min()]
    assert len(interleaved) >= 8  # not a sorted block: A and B interleave in (almost) every class
    # the previous rule, still available: the lowest-numbered half of each class is bbox_A
    sa, sb = old.splits[10].sets["bbox_A"], old.splits[10].sets["bbox_B"]
    assert all(sa[targets[sa] == c].max() < sb[targets[sb] == c].min() for c in range(10))
    assert old.control.A.tolist() == sorted(old.control.A.tolist())
    with pytest.raises(DejavuError, match="order"):
        partition(paths, [5], tmp_path / "bad", order="random")


def test_partition_written_before_the_shuffle_still_loads(synth_small, tmp_path):
    """A manifest without the 'split' block (written before issue 28) loads and is read as
    ascending order; its sets are used as stored."""
    paths = DataPaths.resolve(data=synth_small)
    partition(paths, [5], tmp_path / "p", order="sorted")
    mpath = tmp_path / "p" / "manifest.json"
    m = json.loads(mpath.read_text())
    del m["split"]
    mpath.write_text(json.dumps(m))
    p = Partition.load(tmp_path / "p")
    assert p.split["order"] == "sorted" and p.split["seed"] is None
    p.check_attack_sets(5)
    assert np.array_equal(p.load_set(5, "bbox_A"), np.load(tmp_path / "p" / "5_per_class" / "bbox_A.npy"))


def test_partition_per_seed_pair_cli(synth_small, tmp_path, capsys):
    """Issue 28.3: --seeds S1,S2 writes one partition per seed in OUT/seed<S>, each seeded by
    its seed (so pairs trained and attacked on them are independent replicates)."""
    out = tmp_path / "parts"
    argv = ["partition", "--data", str(synth_small), "--per-class", "5", "--control", "2", "--out", str(out)]
    assert main([*argv, "--seeds", "3,4"]) == 0
    assert capsys.readouterr().out.count("written to") == 2
    p3, p4 = Partition.load(out / "seed3"), Partition.load(out / "seed4")
    assert p3.split["seed"] == 3 and p4.split["seed"] == 4
    assert not np.array_equal(p3.load_set(5, "bbox_A"), p4.load_set(5, "bbox_A"))
    single = partition(DataPaths.resolve(data=synth_small), [5], tmp_path / "single", seed=4, control=2)
    assert np.array_equal(single.splits[5].sets["bbox_A"], p4.load_set(5, "bbox_A"))  # same rule as --seed 4
    assert main([*argv, "--seeds", "3,3", "--force"]) == 2
    assert "each seed once" in capsys.readouterr().err
    assert main([*argv, "--seeds", "1", "--order", "sorted", "--force"]) == 2
