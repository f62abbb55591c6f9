"""``AuditConfig``: every setting of ``dejavu audit`` (YAML file + ``--set key=value``).

Attack settings have the names of :class:`dejavu.attack.config.AttackConfig`; the crop
classifier's have the prefix ``clf_``. Packaged configs: ``synth`` (the default: a small
CNN for the 32 px synthetic data) and ``imagenet`` (a ResNet-50 from scratch, as the
follow-up work).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from dejavu import UsageError
from dejavu.attack.config import PRECISION_HELP, AttackConfig
from dejavu.config import check_choices, load_config, parse_sets, resolve_config
from dejavu.data.fastjpeg import DECODE_HELP, DECODES

CONFIDENCES = ("neg_entropy", "max_prob")
CLASSIFIERS = ("ours", "dejavuoss")
AUGMENTS = ("crop", "ssl", "none")

# The follow-up work's crop classifier (DejaVuOSS train_SSL_crops.py, configs/supervised_cfg.yaml,
# bash_examples/1_training_vicreg_supervised_crops.sh): a bare torchvision ResNet-50 whose own
# fc is the single Linear head; trained on the first SSL view (random resized crop at scale
# 0.08-1, flip, colour jitter p 0.8, grayscale p 0.2, Gaussian blur) of crops saved as S x S
# centre squares in JPEG quality 75; LARS, base lr 0.2 x batch 1024 / 256, weight decay 0.1,
# 10 warm-up epochs, 1000 epochs; every crop of the set (no held-out share).
PRESETS: dict[str, dict[str, Any]] = {
    "dejavuoss": {
        "clf_arch": "resnet50",
        "clf_projector": "none",
        "clf_head": "linear",
        "clf_input": "square",
        "clf_augment": "ssl",
        "clf_scale_min": 0.08,
        "clf_optimizer": "lars",
        "clf_lr": 0.8,
        "clf_weight_decay": 0.1,
        "clf_momentum": 0.9,
        "clf_warmup_epochs": 10,
        "clf_epochs": 1000,
        "clf_batch_size": 1024,
        "clf_label_smoothing": 0.0,
        "clf_holdout": 0.0,
    }
}


AUDIT_FLAGS = (
    "npc",
    "audit_set",
    "train_set",
    "arch",
    "projector",
    "image_size",
    "device",
    "k",
    "confidence",
    "clf_epochs",
    "decode",
    "precision",
    "classifiers",
)


@dataclass
class AuditConfig:
    """Every setting of ``dejavu audit`` (flags, ``--config`` and ``--set`` all fill these)."""

    # what is audited, and what the classifier learns from
    npc: int = field(
        default=300,
        metadata={"help": "images per class of the split whose sets are used (e.g. 300)", "required": True},
    )
    audit_set: str = field(
        default="bbox_A", metadata={"help": "audited images: a partition set name (bbox_A, bbox_B, ...) or a .npy"}
    )
    train_set: str = field(
        default="bbox_B",
        metadata={"help": "the crop classifier's images: a partition set name or a .npy; must not overlap audit_set"},
    )
    public_set: str | None = field(
        default=None,
        metadata={"help": "public images the KNN searches: a .npy of dataset indices (None: the partition's)"},
    )
    # the audited model's KNN attack (same meaning as AttackConfig)
    crop: str = "periphery"
    periphery_search: str = "paper"
    corner_frac: float = 0.3
    embed: str = "projector"
    k: int = field(default=100, metadata={"help": "neighbours of the audited model's KNN attack"})
    k_attk: int | None = None  # None: k
    min_crop_px: float | None = None  # image pixels; None: the dataset's own (100 for ImageNet)
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "side (px) the audited model sees; default: the checkpoint's (a ViT: its position grid; "
            "DINOv2: 224), else 224. A ViT takes a multiple of its patch size"
        },
    )
    knn: str = "auto"
    arch: str | None = field(
        default=None, metadata={"help": "architecture for checkpoints without a stored config (e.g. resnet50)"}
    )
    projector: str | None = field(
        default=None,
        metadata={"help": "projector spec for such checkpoints (e.g. 8192-8192-8192; 'none': backbone embedding)"},
    )
    decode: str = field(default="exact", metadata={"choices": DECODES, "help": DECODE_HELP})
    precision: str = field(default="auto", metadata={"choices": ("auto", "fp32", "bf16"), "help": PRECISION_HELP})
    batch_size: int = 256
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (None: cuda when available)"})
    workers: int | None = None
    n_boot: int = 1000
    seed: int = 0
    unseen_ok: bool = field(
        default=False,
        metadata={
            "help": "audit images the model recorded it did NOT train on (the partition's other training set): "
            "a control that measures correlation only; refused unless set"
        },
    )
    # the crop classifier
    confidence: str = field(
        default="neg_entropy",
        metadata={
            "choices": CONFIDENCES,
            "help": "classifier confidence: neg_entropy (DejaVuOSS's sample test) or max_prob (its eval_crop.py)",
        },
    )
    classifier: str = field(
        default="ours",
        metadata={
            "choices": CLASSIFIERS,
            "help": "crop-classifier recipe: ours, or dejavuoss (the follow-up work's: ResNet-50 + Linear, "
            "SSL augmentations on JPEG centre squares, LARS); its clf_* values yield to --set clf_...",
        },
    )
    classifiers: int = field(
        default=1,
        metadata={
            "help": "crop classifiers trained (seeds seed..seed+N-1); with N > 1 the sample test counts a crop as "
            "classifier-right (correlation) only when all of them are right, as DejaVuOSS"
        },
    )
    clf_arch: str = "smallcnn"
    clf_image_size: int | None = None  # side (px) of the classifier's input; None: image_size
    clf_projector: str = "none"
    # bn-relu-linear (ours) | linear (torchvision's fc, DejaVuOSS)
    clf_head: str = field(default="bn-relu-linear", metadata={"choices": ("bn-relu-linear", "linear")})
    # crop: the crop rectangle | square: DejaVuOSS's saved S x S centre square, JPEG q75
    clf_input: str = field(default="crop", metadata={"choices": ("crop", "square")})
    clf_epochs: int = field(default=60, metadata={"help": "crop-classifier training epochs"})
    clf_batch_size: int = 32
    clf_optimizer: str = field(default="sgd", metadata={"choices": ("sgd", "lars", "adamw")})
    clf_lr: float = 0.05  # absolute learning rate (cosine schedule)
    clf_weight_decay: float = 5e-4
    clf_momentum: float = 0.9
    clf_warmup_epochs: int = 0
    clf_label_smoothing: float = 0.0
    clf_holdout: float = 0.1  # share of the classifier's crops held out for its own accuracy
    clf_snapshot_every: int = 0  # 0: only the final classifier
    # crop (random resized crop + flip) | ssl (+ jitter, grayscale, blur) | none
    clf_augment: str = field(default="crop", metadata={"choices": AUGMENTS})
    clf_scale_min: float = 0.35  # random resized crop scale range (clf_scale_min, 1)
    clf_cache_crops: bool = True  # decode each crop once and keep it in memory (off for ImageNet)

    normalize_keys = AttackConfig.normalize_keys  # the old spelling (crop_algo: periphery) read too

    def validate(self) -> None:
        check_choices(self)
        if not 0 <= self.clf_holdout < 1:
            raise UsageError(f"clf_holdout must be in [0, 1), got {self.clf_holdout}")
        if self.classifiers < 1:
            raise UsageError(f"classifiers must be >= 1, got {self.classifiers}")
        if self.clf_epochs < 1 or self.clf_batch_size < 1:
            raise UsageError("clf_epochs and clf_batch_size must be >= 1")
        if not 0 < self.clf_scale_min <= 1:
            raise UsageError(f"clf_scale_min must be in (0, 1], got {self.clf_scale_min}")
        self.attack_config().validate()

    def attack_config(self) -> AttackConfig:
        """The :class:`AttackConfig` of the audited model's KNN attack (crops, KNN, files)."""
        names = {f.name for f in fields(AttackConfig)}
        kw = {k: v for k, v in asdict(self).items() if k in names}
        kw["k_attk"] = self.k_attk if self.k_attk is not None else self.k
        return AttackConfig(**kw)

    def classifier_config(self) -> dict[str, Any]:
        """The settings that define the classifier's training (a resume must match them)."""
        d = {k: v for k, v in asdict(self).items() if k.startswith("clf_")}
        d.update(seed=self.seed, train_set=self.train_set, npc=self.npc, classifier=self.classifier)
        return d


def apply_classifier_preset(cfg: AuditConfig, explicit: set[str]) -> AuditConfig:
    """``cfg`` with its ``classifier`` preset's ``clf_*`` values (:data:`PRESETS`), except those
    named in ``explicit`` (the keys the user set: ``--set``, flags, or keyword arguments in
    code). The preset overrides a ``--config`` file's values.

    Returns:
        A new validated :class:`AuditConfig` (``cfg`` itself for ``classifier: ours``).
    """
    preset = PRESETS.get(cfg.classifier)
    if not preset:
        return cfg
    out = replace(cfg, **{k: v for k, v in preset.items() if k not in explicit})
    out.validate()
    return out


def preset_config(classifier: str = "ours", **settings: Any) -> AuditConfig:
    """An :class:`AuditConfig` in code with a classifier preset: ``settings`` win over it, e.g.
    ``preset_config("dejavuoss", npc=300, clf_epochs=100)``."""
    return apply_classifier_preset(AuditConfig(classifier=classifier, **settings), set(settings))


def check_preset(cfg: AuditConfig) -> None:
    """Refuse a ``classifier`` preset named but never applied (an ``AuditConfig(classifier=
    "dejavuoss")`` built by hand would train our recipe under the follow-up work's name)."""
    preset = PRESETS.get(cfg.classifier)
    if preset and any(getattr(cfg, k) != preset[k] for k in ("clf_head", "clf_input")):
        raise UsageError(
            f"classifier={cfg.classifier}: its preset was not applied (clf_head {cfg.clf_head!r}, clf_input "
            f"{cfg.clf_input!r}); build the config with load_audit_config(..., sets) or preset_config(...)"
        )


def load_audit_config(path: str | None = None, sets: list[str] | None = None) -> AuditConfig:
    """The library path of ``dejavu audit``'s settings.

    Args:
        path: a YAML file or a packaged name (``synth``, ``imagenet``), or None.
        sets: ``key=value`` overrides, as ``--set``.

    Returns:
        The validated :class:`AuditConfig` (unknown keys and bad values raise
        :class:`dejavu.UsageError`).
    """
    cfg = load_config(AuditConfig, resolve_config(path, "audit"), sets)
    return apply_classifier_preset(cfg, set(parse_sets(sets)))
