"""Format tags of the files dejavu writes (docs/CONTRACTS.md), defined once.

Every stage that writes or reads one of these files takes its tag from here; a reader
compares the tag before trusting the content. A tag's number changes only when a reader
of the old layout would misread the new one.
"""

from __future__ import annotations

CHECKPOINT = "dejavu-ckpt/1"  # SSL snapshots and last.pth (dejavu.ssl.train / .checkpoint)
PROBE = "dejavu-probe/1"  # probe results.json (dejavu.probe)
ATTACK = "dejavu-attack/2"  # attack results.json (dejavu.attack.run): neighbour files hold dataset indices
ATTACK_READABLE = ("dejavu-attack/1", ATTACK)  # /1: neighbour files held positions in the public set
AUDIT = "dejavu-audit/1"  # audit results.json (dejavu.audit): the attack's metrics block, one model
PARTITION = "dejavu-partition/1"  # partition manifest.json
BETON = "dejavu-beton/1"  # the .json record beside each FFCV beton (dejavu.ffcv)
FIGURES = "dejavu-figures/1"  # plots/figures.json (dejavu.report)
ANALYSIS = "dejavu-analysis/1"  # dejavu analyze's re-scored results
RCDM = "dejavu-rcdm/1"  # RCDM checkpoints (dejavu.rcdm)
RCDM_RECONSTRUCT = "dejavu-rcdm-reconstruct/1"  # reconstruct.json (dejavu.rcdm.reconstruct)
MONITOR = "dejavu-monitor/1"  # monitor.json and ep{E}.json of the online monitor (dejavu.monitor)

__all__ = [
    "ANALYSIS",
    "ATTACK",
    "ATTACK_READABLE",
    "AUDIT",
    "BETON",
    "CHECKPOINT",
    "FIGURES",
    "MONITOR",
    "PARTITION",
    "PROBE",
    "RCDM",
    "RCDM_RECONSTRUCT",
]
