from __future__ import annotations

import pytest

# the audit settings of the monitor tests: a 3-epoch classifier, 20 neighbours, 50 bootstrap replicates
AUDIT_YAML = "k: 20\nclf_epochs: 3\nn_boot: 50\nclf_batch_size: 16\n"


@pytest.fixture(scope="session")
def audit_yaml(tmp_path_factory):
    p = tmp_path_factory.mktemp("monitor_cfg") / "audit.yaml"
    p.write_text(AUDIT_YAML)
    return p
