"""Checkpoints written by the original deja vu code load, with embeddings equal element for
element to the original module's.

``SSLNetwork`` below is copied from the original train_SSL.py (facebookresearch/DejaVu), with
its ffcv ``@param`` decorators replaced by plain arguments; ``Ddp`` stands in for
DistributedDataParallel, whose state-dict keys carry ``module.``; checkpoints are saved as the
original's ``ImageNetTrainer.checkpoint`` (a dict with ``model``) and ``train`` (final_weights.pt,
the raw state dict) save them.
"""

import pytest
import torch
import torchvision
from torch import nn

from dejavu import DejavuError
from dejavu.ssl.checkpoint import load_model


class SSLNetwork(nn.Module):
    def __init__(self, arch, remove_head, mlp, patch_keep, fc, loss, proj_relu=0, mlp_coeff=1):
        super().__init__()
        self.proj_relu, self.mlp_coeff = proj_relu, mlp_coeff
        if "resnet" in arch:
            from torchvision.models import resnet

            self.net = resnet.__dict__[arch]()
            if fc:
                self.net.fc = nn.Linear(2048, 256)
            else:
                self.net.fc = nn.Identity()
        # Compute the size of the representation
        self.representation_size = self.net(torch.zeros((1, 3, 224, 224))).size(1)
        # Add a projector head
        self.mlp = mlp
        if remove_head:
            self.num_features = self.representation_size
            self.projector = nn.Identity()
        else:
            self.num_features = int(self.mlp.split("-")[-1])
            self.projector = self.MLP(self.representation_size)
        self.loss = loss
        if loss == "barlow":
            self.bn = nn.BatchNorm1d(self.num_features, affine=False)
        elif loss == "byol":
            self.predictor = self.MLP(self.num_features)

    def MLP(self, size):
        proj_relu, mlp_coeff = self.proj_relu, self.mlp_coeff
        mlp_spec = f"{size}-{self.mlp}"
        layers = []
        f = list(map(int, mlp_spec.split("-")))
        f[-2] = int(f[-2] * mlp_coeff)
        for i in range(len(f) - 2):
            layers.append(nn.Sequential(nn.Linear(f[i], f[i + 1]), nn.BatchNorm1d(f[i + 1]), nn.ReLU(True)))
        if proj_relu:
            layers.append(nn.Sequential(nn.Linear(f[-2], f[-1], bias=False), nn.ReLU(True)))
        else:
            layers.append(nn.Linear(f[-2], f[-1], bias=False))
        return nn.Sequential(*layers)


class Ddp(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


def _original(loss: str, mlp: str = "64-32", proj_relu: int = 0, remove_head: int = 0) -> SSLNetwork:
    torch.manual_seed(0)
    model = SSLNetwork("resnet18", remove_head, mlp, 1.0, 0, loss, proj_relu=proj_relu)
    if loss == "supervised":  # ImageNetTrainer.create_model_and_scaler
        model.fc = nn.Sequential(
            nn.BatchNorm1d(model.num_features),
            nn.ReLU(inplace=True),
            nn.Linear(model.num_features, 10),
        )
    for m in model.modules():  # trained-looking BatchNorm statistics
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def _save_like_original(model: SSLNetwork, path, final: bool = False) -> None:
    ddp = Ddp(model)
    if final:
        torch.save(ddp.state_dict(), path)
        return
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    probes = nn.Linear(model.representation_size, 10)
    state = {
        "epoch": 50,
        "model": ddp.state_dict(),
        "optimizer": opt.state_dict(),
        "probes": probes.state_dict(),
        "optimizer_probes": opt.state_dict(),
    }
    torch.save(state, path)


def _expect(model: SSLNetwork, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():  # label_inference_attack.NN_adversary.get_embed
        h = model.net(x)
        z = model.projector(h)
        out = {"backbone": h, "projector": z}
        if hasattr(model, "fc"):
            out["logits"] = model.fc(z)
    return out


@pytest.mark.parametrize("loss", ["vicreg", "barlow", "byol", "simclr", "dino", "supervised"])
def test_original_checkpoint_embeddings_equal(tmp_path, loss):
    orig = _original(loss)
    _save_like_original(orig, tmp_path / "model_ep50.pth")
    lm = load_model(tmp_path / "model_ep50.pth")  # arch and projector read from the weights
    assert lm.source == "original" and lm.epoch == 50 and lm.has_projector
    assert lm.config["arch"] == "resnet18" and lm.config["projector"] == "64-32"
    x = torch.randn(3, 3, 64, 64)
    want = _expect(orig, x)
    for kind, ref in want.items():
        assert torch.equal(lm.model.embed(x, kind), ref), kind
    if loss == "supervised":
        assert lm.model.spec.num_classes == 10
    if loss == "byol":
        assert any("predictor" in n for n in lm.notes)
    if loss == "barlow":
        assert any("bn.*" in n for n in lm.notes)


def test_original_final_weights_with_given_spec(tmp_path):
    orig = _original("vicreg")
    _save_like_original(orig, tmp_path / "final_weights.pt", final=True)
    lm = load_model(tmp_path / "final_weights.pt", arch="resnet18", projector="64-32")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(lm.model.embed(x), _expect(orig, x)["projector"])
    assert lm.epoch is None


def test_original_proj_relu_and_no_head(tmp_path):
    orig = _original("vicreg", mlp="64-64-32", proj_relu=1)
    _save_like_original(orig, tmp_path / "relu.pth")
    lm = load_model(tmp_path / "relu.pth")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(lm.model.embed(x), _expect(orig, x)["projector"])
    assert lm.config["projector_layout"].endswith("nobias)-ReLU")
    orig = _original("barlow", remove_head=1)
    _save_like_original(orig, tmp_path / "nohead.pth")
    lm = load_model(tmp_path / "nohead.pth")
    assert not lm.has_projector and torch.equal(lm.model.embed(x), _expect(orig, x)["backbone"])


def test_original_wrong_projector_or_arch(tmp_path):
    _save_like_original(_original("vicreg"), tmp_path / "m.pth")
    with pytest.raises(
        DejavuError,
        match=r"projector=64-16 .*first differing: projector.3.weight \(32, 64\) in the file, \(16, 64\)",
    ):
        load_model(tmp_path / "m.pth", projector="64-16")
    with pytest.raises(DejavuError, match=r"differing shapes: backbone\.layer1\.0\.conv1\.weight"):
        load_model(tmp_path / "m.pth", arch="resnet50")


def test_net_prefix_with_flat_projector(tmp_path):
    """``module.net.*`` with a VICReg-style flat projector (as DejaVuOSS's converter reads
    VICReg weights): positions without weights are the ReLUs."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    proj = nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(True), nn.Linear(64, 32, bias=False))
    sd = {f"module.net.{k}": v for k, v in net.state_dict().items()}
    sd.update({f"module.projector.{k}": v for k, v in proj.state_dict().items()})
    torch.save({"model": sd}, tmp_path / "flat.pth")
    lm = load_model(tmp_path / "flat.pth")
    assert lm.source == "original" and lm.config["projector"] == "64-32"
    x = torch.randn(2, 3, 64, 64)
    net.eval(), proj.eval()
    with torch.no_grad():
        assert torch.equal(lm.model.embed(x), proj(net(x)))
