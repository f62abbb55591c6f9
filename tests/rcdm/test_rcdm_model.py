"""The conditioned denoiser, sampling, training, checkpoints (no mocks: real tiny runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dejavu import DejavuError


def _model(seed=0, rep_dim=12):
    from rcdm_helpers import tiny_config

    from dejavu.rcdm.model import RCDM

    torch.manual_seed(seed)
    return RCDM(tiny_config(), rep_dim).eval()


def test_conditioning_changes_the_sample_and_same_inputs_repeat():
    from dejavu.rcdm.sample import make_noise, sample

    m = _model()
    noise = make_noise(2, 32, seed=3)
    r1 = torch.randn(2, 12, generator=torch.Generator().manual_seed(1))
    r2 = torch.randn(2, 12, generator=torch.Generator().manual_seed(2))
    a = sample(m, r1, noise=noise, ddim_steps=5)
    b = sample(m, r1, noise=noise.clone(), ddim_steps=5)
    c = sample(m, r2, noise=noise, ddim_steps=5)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)  # deterministic DDIM: same noise + same representation
    assert (a - c).abs().mean() > 1e-3  # the representation drives the sample


def test_representation_of_wrong_width_is_a_clear_error():
    m = _model()
    with pytest.raises(DejavuError, match=r"expects \(n, 12\)"):
        m(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long), torch.zeros(1, 7))


def test_config_validation():
    from dejavu.config import load_config, packaged_config
    from dejavu.rcdm.model import RCDMConfig

    with pytest.raises(DejavuError, match="image_size"):
        RCDMConfig(image_size=48).validate()
    with pytest.raises(DejavuError, match="norm_num_groups"):
        RCDMConfig(block_out_channels=[12, 16], norm_num_groups=8).validate()
    for name in ("tiny", "paper128", "paper256"):
        cfg = load_config(RCDMConfig, packaged_config("rcdm", f"{name}.yaml"))
        assert cfg.beta_schedule == "linear"
    assert load_config(RCDMConfig, packaged_config("rcdm", "paper128.yaml")).diffusion_steps == 1000


def test_schedule_reaches_noise_with_fewer_steps():
    from dejavu.rcdm.model import RCDMConfig, make_scheduler

    for steps in (1000, 250, 100):
        s = make_scheduler(RCDMConfig(diffusion_steps=steps))
        assert float(s.alphas_cumprod[-1]) < 1e-3  # the last step is (almost) pure noise


@pytest.mark.slow
def test_training_loss_falls(rcdm_run, tmp_path):
    from rcdm_helpers import tiny_config

    from dejavu.rcdm.train import train_rcdm

    res = train_rcdm(
        tiny_config(steps=40), rcdm_run["models"]["A"], rcdm_run["partition"], rcdm_run["paths"], tmp_path / "r"
    )
    assert res.step == 40 and len(res.losses) == 40 and res.num_train > 0
    first, last = np.mean(res.losses[:5]), np.mean(res.losses[-5:])
    assert last < 0.7 * first, (first, last)
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(5, 41, 5))


@pytest.mark.slow
def test_checkpoint_round_trip_and_exact_resume(rcdm_run, tmp_path):
    from rcdm_helpers import tiny_config

    from dejavu.rcdm.model import load_rcdm
    from dejavu.rcdm.sample import make_noise, sample
    from dejavu.rcdm.train import train_rcdm

    args = (rcdm_run["models"]["B"], rcdm_run["partition"], rcdm_run["paths"])
    straight = train_rcdm(tiny_config(steps=6), *args, tmp_path / "straight")
    train_rcdm(tiny_config(steps=3), *args, tmp_path / "resumed")
    with pytest.raises(DejavuError, match="already exists"):
        train_rcdm(tiny_config(steps=3), *args, tmp_path / "resumed")
    resumed = train_rcdm(tiny_config(steps=6), *args, tmp_path / "resumed", resume=True)
    assert resumed.step == 6 and len(resumed.losses) == 3
    assert resumed.losses == straight.losses[3:]  # same batches, noise and optimizer state
    a, b = load_rcdm(tmp_path / "straight"), load_rcdm(tmp_path / "resumed" / "rcdm_step6.pth")
    assert a.step == b.step == 6 and a.ssl["sha256"] == b.ssl["sha256"]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    # save -> load -> identical samples
    rep = torch.from_numpy(np.load(tmp_path / "straight" / "reps.npy")[:2])
    noise = make_noise(2, 32, seed=0)
    s1 = sample(a.model, rep, noise=noise, ddim_steps=4)
    s2 = sample(load_rcdm(tmp_path / "straight" / "last.pth").model, rep, noise=noise, ddim_steps=4)
    assert torch.equal(s1, s2)
    # the EMA (sampling) weights differ from the raw training weights
    raw = load_rcdm(tmp_path / "straight", weights="model").model.state_dict()
    assert any(not torch.equal(v, raw[k]) for k, v in a.model.state_dict().items() if v.is_floating_point())


def test_unsafe_or_foreign_checkpoint_is_refused(tmp_path):
    from dejavu.io import atomic_torch_save
    from dejavu.rcdm.model import load_rcdm

    atomic_torch_save(tmp_path / "x.pth", {"model": {}})
    with pytest.raises(DejavuError, match="not an RCDM checkpoint"):
        load_rcdm(tmp_path / "x.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "dejavu-rcdm/1", "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(DejavuError, match="refused to load"):
        load_rcdm(tmp_path / "evil.pth")
    with pytest.raises(DejavuError, match="not found"):
        load_rcdm(tmp_path / "nothing")
