"""Load folders of stored results into typed records (no torch, files only).

Every figure and report is built from ``results.json`` files (attack: format
``dejavu-attack/2``, older ``/1`` folders read too; probe: ``dejavu-probe/1``; docs/CONTRACTS.md), never from logs.
A scan walks the given folders recursively; files of other formats are ignored and
malformed ones are listed in :attr:`Results.skipped` with the reason (one bad file
does not hide a whole sweep), unless ``strict=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dejavu import DejavuError, formats
from dejavu.analysis.metrics import score_at
from dejavu.analysis.tables import ATTACK_FORMAT, ATTACK_FORMATS  # noqa: F401  (re-exported for readers)

PROBE_FORMAT = formats.PROBE
AUDIT_FORMAT = formats.AUDIT  # the one-model test (dejavu audit): the attack's metrics block
P_KEYS = ("5", "20", "100")

# Model-config keys that identify a sweep point's *position* or bookkeeping, not a
# hyper-parameter: they never split series.
NOT_HYPERPARAMS = frozenset(
    {
        "epoch",
        "epochs_done",
        "npc",
        "set",
        "index_file",
        "out",
        "data",
        "images",
        "bboxes",
        "partition",
        "resume",
        "force",
        "device",
        "workers",
        "fingerprint",
        "path",
        "launcher",
        "slurm_partition",
        "timeout_min",
        "nodes",
        "gpus",
        "gpus_per_node",
        "snapshot_every",
        "log_every",
        "method",
    }
)


def lookup(d: dict[str, Any] | None, key: str, default: Any = None) -> Any:
    """``d[key]`` with dotted keys (``"loss.sim_coeff"``, ``"excess.top1.20"``); ``default``
    when absent. The one reader of nested result dicts (report, plots, demo summary).

    Args:
        d: a (nested) dict, or None (treated as empty).
        key: a key of ``d`` as is, else a dotted path into nested dicts.
        default: returned when the key or a step of the path is absent.

    Returns:
        The value found, or ``default``.
    """
    cur: Any = d or {}
    if key in cur:
        return cur[key]
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


@dataclass
class AttackRecord:
    """One attack folder (one snapshot pair), or one audit folder read alike (:func:`collect`:
    target = the audited model, reference = the crop classifier).
    """

    path: Path  # the results.json
    method: str
    npc: int
    epoch: int
    crop: str
    embed: str
    config: dict[str, Any]  # the attack's config
    model_config: dict[str, Any]  # model A's training config (hyper-parameters)
    metrics: dict[str, Any]
    counts: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @property
    def dir(self) -> Path:
        """The folder holding the ``results.json``."""
        return self.path.parent

    @property
    def variant(self) -> str:
        """The attack variant, as the paper compares them: crop and embedding."""
        return f"{self.crop}/{self.embed}"

    def acc(self, which: str, p: str | int, top: str = "top1") -> float:
        """Accuracy of one model on its most confident examples.

        Args:
            which: ``target`` or ``reference``.
            p: the fraction in percent: 5, 20 or 100.
            top: ``top1`` or ``top5``.

        Returns:
            The accuracy, in [0, 1].
        """
        return float(self.metrics[top][which][str(p)])

    def score(self, top: str = "top1", at: str = "20") -> float:
        """The déjà vu score (target − reference accuracy).

        Args:
            top: ``top1`` or ``top5``.
            at: the most confident fraction in percent (``5``, ``20``, ``100``).

        Returns:
            The score, in [-1, 1] (NaN when the results hold none at ``at``).
        """
        v = score_at(self.metrics[top], at)
        return float("nan") if v is None else float(v)

    def ci(self, top: str = "top1", at: str = "20") -> tuple[float, float] | None:
        """The 95% bootstrap CI of :meth:`score` (same ``top`` and ``at``).

        Args:
            top: ``top1`` or ``top5``.
            at: the fraction of most confident examples in percent (``"5"``, ``"20"``, ``"100"``).

        Returns:
            ``(low, high)``, or None when the results hold no interval.
        """
        ci = score_at(self.metrics[top].get("ci95") or {}, at)
        return (float(ci[0]), float(ci[1])) if ci else None

    @property
    def quadrants(self) -> dict[str, float]:
        """Shares of the sample test's quadrants (memorized, correlated, ...); empty when absent."""
        return {k: float(v) for k, v in self.metrics.get("quadrants", {}).items()}

    def sweep(self, top: str = "top1") -> dict[str, list[float]] | None:
        """The confidence sweep of ``top`` (``{"p", "target", "reference"}``), or None."""
        return self.metrics[top].get("sweep")

    def param(self, key: str) -> Any:
        """A hyper-parameter by (dotted) key: model A's (the audited model's) training config
        first, then the attack's config; None when neither has it.
        """
        v = lookup(self.model_config, key)
        return v if v is not None else lookup(self.config, key)

    @property
    def seed(self) -> Any:
        """The training seed of the pair (model A's config)."""
        return self.model_config.get("seed")

    @property
    def control(self) -> dict[str, Any] | None:
        """The held-out control block of results.json, or None."""
        c = self.raw.get("control")
        return c if isinstance(c, dict) and "excess" in c else None

    def excess(self, top: str = "top1", at: str = "20") -> dict[str, Any] | None:
        """The score against the held-out control, for one top-k and fraction.

        Args:
            top: ``top1`` or ``top5``.
            at: ``20`` or ``100`` (percent most confident).

        Returns:
            ``{"score", "control", "excess", "ci95", "se", "excludes_zero"}``, or None without a control.
        """
        c = self.control
        return c["excess"].get(top, {}).get(str(at)) if c else None


@dataclass
class ProbeRecord:
    """One linear-probe folder (``dejavu-probe/1``)."""

    path: Path
    method: str
    npc: int
    epoch: int
    features: str
    top1: float
    top5: float
    config: dict[str, Any]
    model_config: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @property
    def dir(self) -> Path:
        """The folder holding the ``results.json``."""
        return self.path.parent

    def param(self, key: str) -> Any:
        """A hyper-parameter by (dotted) key: the probed model's training config first, then
        the probe's config; None when neither has it.
        """
        v = lookup(self.model_config, key)
        return v if v is not None else lookup(self.config, key)


@dataclass
class Results:
    """What :func:`collect` found: attacks, probes, audits, and the files skipped (with why)."""

    attacks: list[AttackRecord] = field(default_factory=list)
    probes: list[ProbeRecord] = field(default_factory=list)
    audits: list[AttackRecord] = field(default_factory=list)  # one-model tests (target = model, reference = classifier)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.attacks) + len(self.probes) + len(self.audits)


def _need(d: dict[str, Any], key: str, path: Path) -> Any:
    if key not in d or d[key] is None:
        raise DejavuError(f"{path}: missing '{key}'")
    return d[key]


def parse_attack(d: dict[str, Any], path: Path) -> AttackRecord:
    """An attack's (or an audit's) ``results.json`` contents as a record.

    Args:
        d: the parsed JSON.
        path: the file, for the record and the messages.

    Returns:
        The :class:`AttackRecord`.

    Raises:
        DejavuError: a required key is missing (``metrics``, ``npc``, ``epoch``, an accuracy
            at 5/20/100%) or npc/epoch is not an integer.
    """
    cfg = d.get("config") or {}
    metrics = _need(d, "metrics", path)
    for top in ("top1",):
        m = _need(metrics, top, path)
        for which in ("target", "reference"):
            for p in P_KEYS:
                if p not in (m.get(which) or {}):
                    raise DejavuError(f"{path}: metrics.{top}.{which} has no '{p}' entry")
    models = d.get("models") or {}
    mcfg = dict((models.get("A") or {}).get("config") or {})
    try:
        return AttackRecord(
            path=path,
            method=str(d.get("method") or mcfg.get("method") or "?"),
            npc=int(_need(d, "npc", path)),
            epoch=int(_need(d, "epoch", path)),
            crop=str(cfg.get("crop", "periphery")),
            embed=str(cfg.get("embed", "projector")),
            config=cfg,
            model_config=mcfg,
            metrics=metrics,
            counts=d.get("counts") or {},
            raw=d,
        )
    except (TypeError, ValueError) as e:
        raise DejavuError(f"{path}: bad npc/epoch ({e})") from None


def parse_probe(d: dict[str, Any], path: Path) -> ProbeRecord:
    """A probe's ``results.json`` contents as a record.

    Args:
        d: the parsed JSON.
        path: the file, for the record and the messages.

    Returns:
        The :class:`ProbeRecord`.

    Raises:
        DejavuError: ``npc``, ``epoch``, ``top1`` or ``top5`` missing or not a number.
    """
    model = d.get("model") or {}
    mcfg = dict(model.get("config") or {})
    cfg = d.get("config") or {}
    epoch = d.get("epoch", model.get("epoch"))
    try:
        return ProbeRecord(
            path=path,
            method=str(d.get("method") or mcfg.get("method") or "?"),
            npc=int(_need(d, "npc", path)),
            epoch=int(epoch if epoch is not None else _need(d, "epoch", path)),
            features=str(cfg.get("features", "backbone")),
            top1=float(_need(d, "top1", path)),
            top5=float(_need(d, "top5", path)),
            config=cfg,
            model_config=mcfg,
            raw=d,
        )
    except (TypeError, ValueError) as e:
        raise DejavuError(f"{path}: bad npc/epoch/top1/top5 ({e})") from None


def _result_files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "results.json" in filenames:
            yield Path(dirpath) / "results.json"
        elif "public_idxs.npy" in filenames or any("_attk_" in n for n in filenames):
            yield Path(dirpath)  # an attack folder without results.json: unfinished


def collect(roots: Iterable[str | os.PathLike], strict: bool = False) -> Results:
    """Scan folders (recursively) or files for attack, probe and audit ``results.json``.

    Args:
        roots: folders to walk, or ``results.json`` files.
        strict: raise on a malformed file instead of listing it in :attr:`Results.skipped`.

    Returns:
        The records found, each list sorted by method, variant (probes: features), npc, epoch
        and path; files of other formats are ignored.

    Raises:
        DejavuError: a root does not exist; with ``strict``, a malformed file.
    """
    res = Results()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise DejavuError(f"{root}: no such file or folder")
        for f in _result_files(root):
            if f.name != "results.json" and f.is_dir():
                why = "an unfinished attack (arrays but no results.json): rerun the attack into it"
                if strict:
                    raise DejavuError(f"{f}: {why}")
                res.skipped.append((f, why))
                continue
            try:
                d = json.loads(f.read_text())
                fmt = d.get("format") if isinstance(d, dict) else None
                if fmt in ATTACK_FORMATS:
                    res.attacks.append(parse_attack(d, f))
                elif fmt == PROBE_FORMAT:
                    res.probes.append(parse_probe(d, f))
                elif fmt == AUDIT_FORMAT:  # a released model may have no epoch: 0
                    res.audits.append(
                        parse_attack(
                            {
                                **d,
                                "epoch": d.get("epoch") or 0,
                                "models": {"A": (d.get("models") or {}).get("audited")},
                            },
                            f,
                        )
                    )
                else:
                    continue  # someone else's results.json (e.g. RCDM): not ours to plot
            except json.JSONDecodeError as e:
                if strict:
                    raise DejavuError(f"{f}: not valid JSON ({e.msg} at line {e.lineno})") from None
                res.skipped.append((f, f"not valid JSON ({e.msg})"))
            except (DejavuError, KeyError, TypeError, AttributeError) as e:
                if strict:
                    raise DejavuError(str(e) if isinstance(e, DejavuError) else f"{f}: malformed ({e!r})") from None
                res.skipped.append((f, str(e)))
    res.attacks.sort(key=lambda r: (r.method, r.variant, r.npc, r.epoch, str(r.path)))
    res.probes.sort(key=lambda r: (r.method, r.features, r.npc, r.epoch, str(r.path)))
    res.audits.sort(key=lambda r: (r.method, r.npc, r.epoch, str(r.path)))
    return res


def _scalar_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """A training config's scalar settings, the trained method's own section among them as
    dotted keys (``vicreg.sim``)."""
    out = {k: v for k, v in cfg.items() if not isinstance(v, (dict, list))}
    section = cfg.get(str(cfg.get("method")))
    if isinstance(section, dict):
        out.update({f"{cfg['method']}.{k}": v for k, v in section.items() if not isinstance(v, (dict, list))})
    return out


def varying_hyperparams(records: list[AttackRecord] | list[ProbeRecord]) -> list[str]:
    """Scalar model-config keys whose values differ between records (sweep dimensions
    other than epoch/npc): they split series so that no two sweep points collide.

    Args:
        records: attack or probe records.

    Returns:
        The keys, sorted; a key absent from some records counts as varying.
    """
    keys: dict[str, set] = {}
    for r in records:
        for k, v in _scalar_params(r.model_config).items():
            if k not in NOT_HYPERPARAMS:
                keys.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    for r in records:  # a key missing in some records also varies
        for k in list(keys):
            if k not in _scalar_params(r.model_config):
                keys[k].add("<absent>")
    return sorted(k for k, vals in keys.items() if len(vals) > 1)


def seed_groups(records: list[AttackRecord]) -> dict[tuple, list[AttackRecord]]:
    """Attacks that differ only in the training seed (model pairs of one setting), keyed by
    (method, variant, npc, epoch, other varying hyper-parameters); each group sorted by seed.

    Args:
        records: attack records.

    Returns:
        ``{key: [records]}``, keys in string order; of two records with the same seed, the later one.
    """
    hps = [h for h in varying_hyperparams(records) if h != "seed"]
    groups: dict[tuple, dict[str, AttackRecord]] = {}
    for r in records:
        key = (r.method, r.variant, r.npc, r.epoch, *((h, repr(r.param(h))) for h in hps))
        groups.setdefault(key, {})[repr(r.seed)] = r  # a duplicate seed keeps the last file
    return {
        k: sorted(v.values(), key=lambda r: (str(type(r.seed)), r.seed if r.seed is not None else 0))
        for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))
    }
