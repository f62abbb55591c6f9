"""Method registry: name -> ``Method`` class (loss, extra heads, views, EMA teachers).

Adding a method = one module under ``dejavu/ssl/methods`` (a
:class:`dejavu.ssl.methods.base.Method` subclass and its ``Settings`` dataclass, which
becomes the method's section of ``TrainConfig``), one line here, and its paper setting
``configs/ssl/<name>.yaml`` (a few lines over ``base/paper.yaml``). The CLI's choices and
the tests read this registry. Entries are import strings so ``dejavu --help`` does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dejavu import DejavuError

if TYPE_CHECKING:
    from dejavu.ssl.methods.base import Method

METHODS: dict[str, str] = {
    "vicreg": "dejavu.ssl.methods.vicreg:VICReg",
    "simclr": "dejavu.ssl.methods.simclr:SimCLR",
    "barlow": "dejavu.ssl.methods.barlow:BarlowTwins",
    "byol": "dejavu.ssl.methods.byol:BYOL",
    "dino": "dejavu.ssl.methods.dino:DINO",
    "supervised": "dejavu.ssl.methods.supervised:Supervised",
}


def get_method(name: str) -> type[Method]:
    """The :class:`~dejavu.ssl.methods.base.Method` class registered as ``name``.

    Args:
        name: a key of :data:`METHODS`.

    Returns:
        The class (its module imported now); an unknown name is a :class:`DejavuError`.
    """
    if name not in METHODS:
        raise DejavuError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    mod, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(mod), cls)
