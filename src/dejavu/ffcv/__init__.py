"""Optional FFCV fast path (DESIGN 4, 7.5): ``.beton`` files and loaders built on the
upstream ``ffcv`` package (1.0.x), installed with the ``ffcv`` extra.

Importing :mod:`dejavu` (or this package) never imports ``ffcv``; the functions that
need it call :func:`require_ffcv`, which turns a missing or unloadable ``ffcv`` into a
one-line :class:`dejavu.DejavuError` saying how to install it.
"""

from __future__ import annotations

from types import ModuleType

from dejavu import DejavuError

SYSTEM_PACKAGES = "pkg-config libturbojpeg0-dev libopencv-dev"
INSTALL_HINT = (
    f"install the system packages (Debian/Ubuntu: apt-get install {SYSTEM_PACKAGES}; "
    'conda: ffcv3.yaml), then pip install -e ".[ffcv]"'
)


def require_ffcv(what: str = "the FFCV fast path") -> ModuleType:
    """Import ``ffcv`` (and its compiled part) or raise a one-line install message.

    Args:
        what: the feature asking, named in the message (e.g. ``"--loader ffcv"``).

    Returns:
        The ``ffcv`` module.
    """
    try:
        import ffcv
        import ffcv.libffcv
    except (ImportError, OSError) as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DejavuError(
            f"{what} needs the optional ffcv package, which cannot be imported ({detail}); {INSTALL_HINT}"
        ) from None
    return ffcv
