from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def rcdm_run(synth_small, partition_small, tmp_path_factory):
    """A real small run: trained SSL pair, attack, two tiny RCDMs (see rcdm_helpers)."""
    from rcdm_helpers import build_run

    return build_run(tmp_path_factory.mktemp("rcdm_run"), synth_small, partition_small)
