"""The one verdict a report opens with: the score, the held-out control and its size, the
number of model pairs and their design, and the one-model test when there is one, put
together into a few sentences a reviewer can quote, each interval named by what it covers.

Rules (top-1, 20% most confident; differences in points):

* Two-model attack with a control and N >= 2 model pairs differing only in the training
  seed: the pair-level interval of the mean excess decides ("memorization shown" when it
  excludes 0, else "no memorization shown").
* One model pair with a control: the example-level CI does not cover training randomness,
  so nothing is "shown" whatever it says ("not established").
* No control: the score alone cannot say what two training runs reach without memorization
  ("not established").
* A control of fewer than :data:`SMALL_CONTROL` crops per half is named as small: its own
  score is then uncertain enough to move the excess on its own.
* The one-model test (an audit) is a separate, weaker test (a crop classifier, not a twin
  model, is its reference); its result is stated and related to the two-model one. Alone,
  it is the headline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dejavu.report.collect import AttackRecord
from dejavu.units import pts, pts_ci

DESIGNS = {  # how the two models of a pair were trained (dejavu.ssl.config.pair_design)
    "independent": "A and B trained with independent seeds",
    "coupled": "A and B of a pair share their training seed",
}
SMALL_CONTROL = 30  # crops per half (A, B) or per audit control below which the control is called small


@dataclass
class Verdict:
    """``label``: a few words ("memorization shown", ...); ``text``: the sentences after it."""

    label: str
    text: str

    def __str__(self) -> str:
        return f"Verdict: {self.label}. {self.text}"


def ci_phrase(ci, over: str = "examples") -> str:
    """`` (95% CI over examples [lo, hi] pts)``, or why there is none (no interval stored, or
    NaN bounds from ``--bootstrap 0``)."""
    if ci is None or not all(math.isfinite(v) for v in ci):
        return " (no CI: --bootstrap 0)"
    return f" (95% CI over {over} {pts_ci(ci)})"


def _setting(r: AttackRecord) -> str:
    return f"{r.method}, {r.npc} images per class, epoch {r.epoch}"


def _control_size(r: AttackRecord) -> tuple[str, int]:
    """``("A 20 and B 18 crops", 18)``: the control's attacked crops and the smallest half."""
    counts = (r.control or {}).get("counts", {})
    if "control" in counts:  # an audit: one control set
        n = int(counts["control"].get("attacked", 0))
        return f"{n} crops", n
    a, b = (int(counts.get(y, {}).get("attacked", 0)) for y in "AB")
    return f"A {a} and B {b} crops", min(a, b)


def _small(r: AttackRecord) -> str:
    size, n = _control_size(r)
    if n >= SMALL_CONTROL:
        return ""
    ex = r.excess() or {}
    return (
        f" The control is small ({size}): its own score ({pts(ex.get('control', float('nan')))}) is uncertain "
        "enough to move the excess by itself; set more images aside (dejavu partition --control N)."
    )


def two_model(head: AttackRecord, row: dict[str, Any] | None) -> Verdict:
    """The verdict of the headline attack; ``row``: its :func:`~dejavu.report.plots.significance_table`
    row (None without a control)."""
    score, ci = head.score(), head.ci()
    score_s = f"déjà vu score {pts(score)}" + ci_phrase(ci)
    if head.control is None:
        return Verdict(
            "not established (no held-out control)",
            f"{_setting(head)}: {score_s}. Without a held-out control nothing says how large a score two "
            "training runs reach without memorization (dejavu partition --control N, or dejavu attack "
            "--control VAL_DIR).",
        )
    ex = head.excess()
    assert ex is not None
    size, _ = _control_size(head)
    pl = (row or {}).get("pair_level") or {}
    if pl.get("n_pairs", 0) >= 2:
        shown = bool(pl["distinguishable"])
        seeds = ", ".join(str(s) for s in row["seeds"]) if row else ""
        words = [DESIGNS[d] for d in (row or {}).get("design") or [] if d in DESIGNS]  # known designs only
        design = f"; {' / '.join(words)}" if words else ""
        return Verdict(
            "memorization shown" if shown else "no memorization shown",
            f"{_setting(head)}: over {pl['n_pairs']} model pairs (training seeds {seeds}{design}), the score exceeds "
            f"the held-out control ({size} per pair) by {pts(pl['mean'])} on average, 95% interval over pairs "
            f"{pts_ci(pl['ci95'])}, which covers training randomness and the choice of examples: "
            + ("distinguishable from zero." if shown else "NOT distinguishable from zero.")
            + _small(head),
        )
    word = "excludes" if ex.get("excludes_zero") else "includes"
    return Verdict(
        "not established (one model pair)",
        f"{_setting(head)}: {score_s}; the held-out control ({size}) scores {pts(ex['control'])}, so the "
        f"excess is {pts(ex['excess'])}, 95% CI over examples {pts_ci(ex['ci95'])} ({word} 0). With one model "
        "pair this interval does not cover training randomness, so it cannot show memorization by itself "
        "(train >= 3 seed pairs)." + _small(head),
    )


def _audit_sentence(a: AttackRecord) -> tuple[str, bool | None]:
    """The one-model result in a sentence, and whether its excess is distinguishable from zero
    (None without a control)."""
    audited = (a.raw.get("sets") or {}).get("audit", "?")
    ci = a.ci()
    s = (
        f"the one-model test of {a.method} ({audited}; the model against a crop classifier) scores "
        f"{pts(a.score())}{ci_phrase(ci, 'images')}"
    )
    ex = a.excess()
    if ex is None:
        return s + ", with no held-out control", None
    lo, hi = ex["ci95"]
    if lo != lo or hi != hi:  # NaN: no interval (n_boot 0)
        return s + f"; its excess over its control is {pts(ex['excess'])} (no interval)", None
    shown = bool(ex["excludes_zero"])
    return (
        s + f"; its excess over its held-out control ({_control_size(a)[0]}) is {pts(ex['excess'])}, 95% CI "
        f"{pts_ci(ex['ci95'])} over the audited and control images: "
        + ("distinguishable from zero" if shown else "NOT distinguishable from zero"),
        shown,
    )


def one_model(audit: AttackRecord) -> Verdict:
    """The verdict of a report of audits only."""
    s, shown = _audit_sentence(audit)
    label = {
        True: "excess found by the one-model test",
        False: "no excess shown by the one-model test",
        None: "not established (no held-out control)",
    }[shown]
    text = s[0].upper() + s[1:] + "."
    if audit.control is not None:
        text += (
            " Its interval covers the choice of images for this one model and classifier, not training randomness."
            + _small(audit)
        )
    return Verdict(label, text)


def overall(head: AttackRecord | None, row: dict[str, Any] | None, audits: list[AttackRecord]) -> Verdict | None:
    """The report's verdict: the two-model one when there is an attack, the one-model test
    related to it; the one-model one alone otherwise; None without either."""
    audit = pick_audit(audits, head)
    if head is None:
        return one_model(audit) if audit is not None else None
    v = two_model(head, row)
    if audit is None:
        return v
    s, shown = _audit_sentence(audit)
    two = v.label == "memorization shown"
    if shown is None:
        rel = "it has no control to compare with"
    elif two and shown:
        rel = "it agrees"
    elif two:
        rel = "it does not confirm this on its own: it is the weaker test (a crop classifier, not a twin model, is its reference)"
    elif shown:
        rel = "on its own it finds an excess, but its interval covers only the choice of images, for this one model"
    else:
        rel = "it finds none either"
    v.text += f" Separately, {s}; {rel}."
    return v


def pick_audit(audits: list[AttackRecord], head: AttackRecord | None) -> AttackRecord | None:
    """The audit the verdict cites: one of the headline's method and npc with a control first."""
    if not audits:
        return None

    def key(a: AttackRecord):
        same = head is not None and (a.method, a.npc) == (head.method, head.npc)
        return (not same, a.control is None, -a.epoch, str(a.path))

    return min(audits, key=key)
