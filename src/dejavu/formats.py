"""Format tags of the files dejavu writes (docs/CONTRACTS.md), defined once.

Every stage that writes or reads one of these files takes its tag from here; a reader
compares the tag before trusting the content. A tag's number changes only when a reader
of the old layout would misread the new one.
"""

from __future__ import annotations

CHECKPOINT = "dejavu-ckpt/1"  # SSL snapshots and last.pth (dejavu.ssl.train / .checkpoint)
PROBE = "dejavu-probe/1"  # probe results.json (dejavu.probe)
ATTACK = "dejavu-attack/1"  # attack results.json (dejavu.attack.run)
RCDM = "dejavu-rcdm/1"  # RCDM checkpoints (dejavu.rcdm)
RCDM_RECONSTRUCT = "dejavu-rcdm-reconstruct/1"  # reconstruct.json (dejavu.rcdm.reconstruct)

__all__ = ["ATTACK", "CHECKPOINT", "PROBE", "RCDM", "RCDM_RECONSTRUCT"]
