"""The attack's settings: :class:`AttackConfig` and the names of its flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dejavu import DejavuError
from dejavu.attack.crops import PERIPHERY_SEARCHES, renamed_search_keys
from dejavu.config import check_choices
from dejavu.data.fastjpeg import DECODE_HELP, DECODES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# AttackConfig fields that are also command-line flags (the rest: --set key=value)
ATTACK_FLAGS = (
    "npc",
    "crop",
    "periphery_search",
    "corner_frac",
    "embed",
    "k",
    "k_attk",
    "min_crop_px",
    "image_size",
    "knn",
    "batch_size",
    "device",
    "workers",
    "n_boot",
    "seed",
    "arch",
    "projector",
    "crops_betons",
    "decode",
    "precision",
)

# settings of how a stage runs, not of what it measures: left out of results.json's config
RUN_ONLY = ("device", "workers", "batch_size")


def recorded_config(cfg: DataclassInstance, resolved: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` block of an attack's or an audit's results.json: the settings less
    :data:`RUN_ONLY`, then the values the run resolved (image size, transform, device, ...)."""
    return {**{k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY}, **resolved}


PRECISION_HELP = (
    "the embedding forward's arithmetic: fp32 (as the original; the paper configs), bf16 (autocast: "
    "faster on GPUs, embeddings change by < 5%% relative L2 and keep > 90%% of the top-20 neighbours, "
    "tests/attack/test_embed_precision.py), auto = bf16 on CUDA, fp32 elsewhere. The resolved one is "
    "recorded in results.json (config.forward_precision) and in the embedding cache key"
)


@dataclass
class AttackConfig:
    """The attack's settings (``dejavu attack``: flags, ``--config`` and ``--set`` all fill these)."""

    crop: str = field(
        default="periphery",
        metadata={
            "choices": ("periphery", "corner"),
            "help": "periphery: the largest box-free rectangle of DESIGN 2.3; corner: the bottom-left "
            "corner-frac x corner-frac of the image (no boxes needed)",
        },
    )
    periphery_search: str = field(
        default="paper",
        metadata={
            "choices": tuple(PERIPHERY_SEARCHES),
            "help": "how --crop periphery searches the box-free rectangle: paper (the paper's elementary-interval "
            "scan) or largest-empty (a true largest-empty-rectangle search: better crops, not the paper's); "
            "formerly --crop-algo periphery|largest-empty, still read",
        },
    )
    corner_frac: float = field(default=0.3, metadata={"help": "corner crop side fraction"})
    embed: str = field(
        default="projector",
        metadata={
            "choices": ("projector", "backbone", "logits"),
            "help": "embedding used for KNN (projector: the paper's; backbone: the guillotine comparison; "
            "logits: supervised models, argmax prediction and max-logit confidence)",
        },
    )
    k: int = field(default=100, metadata={"help": "neighbours stored per crop"})
    k_attk: int | None = field(default=None, metadata={"help": "neighbours voting for the label (None: k)"})
    min_crop_px: float | None = field(
        default=None,
        metadata={
            "help": "accept a crop only if its shorter side is > this many pixels of the original image, "
            "whatever --image-size (None: the dataset's own: 100 for ImageNet as in the paper; a generated "
            "dataset's synth.json min_crop_px)"
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "evaluation resolution S (resize 256/224*S, center-crop S; None: the checkpoint's, else 224)"
        },
    )
    knn: str = field(
        default="auto",
        metadata={
            "choices": ("auto", "torch", "faiss"),
            "help": "exact KNN backend, streamed over the public set; all give the same neighbours (auto: "
            "faiss on CPU, torch on CUDA unless faiss has GPUs)",
        },
    )
    npc: int = field(
        default=300,
        metadata={
            "help": "images per class of the attacked split (e.g. 300: partition/300_per_class)",
            "required": True,
        },
    )
    batch_size: int = field(default=256, metadata={"help": "embedding batch size"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (None: cuda when available)"})
    workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader processes decoding images (0: one decoding thread inside the process, "
            "overlapping the forward; None: 8 on GPU, 0 on CPU)"
        },
    )
    n_boot: int = field(
        default=1000, metadata={"help": "bootstrap replicates for CIs (0 = off)", "aliases": ("--bootstrap",)}
    )
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    arch: str | None = field(
        default=None, metadata={"help": "architecture for checkpoints without a stored config (e.g. resnet50)"}
    )
    projector: str | None = field(
        default=None, metadata={"help": "projector spec for such checkpoints (e.g. 8192-8192-8192)"}
    )
    crops_betons: str | None = field(
        default=None,
        metadata={
            "help": "read the crops of sets A and B from this folder's <npc>_per_class_bbox_{A,B}.beton "
            "(dejavu betons, same --min-crop-px/--periphery-search; needs the ffcv extra)"
        },
    )

    decode: str = field(default="exact", metadata={"choices": DECODES, "help": DECODE_HELP})
    precision: str = field(default="auto", metadata={"choices": ("auto", "fp32", "bf16"), "help": PRECISION_HELP})

    def __post_init__(self) -> None:
        if self.k_attk is None:
            self.k_attk = self.k

    @classmethod
    def normalize_keys(cls, d: dict[str, Any], source: str) -> dict[str, Any]:
        """The old spelling of a ``--config`` file or ``--set`` (``crop_algo: periphery``) read as
        today's (``periphery_search: paper``): :func:`dejavu.attack.crops.renamed_search_keys`."""
        return renamed_search_keys(d, source)

    def validate(self) -> None:
        """Every value allowed: the fields' choices (the one check, :mod:`dejavu.config`), then ranges."""
        check_choices(self)  # a library caller's config too, built without from_dict
        if self.k < 1 or self.k_attk is None or not 1 <= self.k_attk <= self.k:
            raise DejavuError(f"need k >= 1 and 1 <= k_attk <= k (got k={self.k}, k_attk={self.k_attk})")
        if not 0 < self.corner_frac <= 1:
            raise DejavuError(f"--corner-frac must be in (0, 1], got {self.corner_frac}")
        for flag, v, lo in (
            ("--batch-size", self.batch_size, 1),
            ("--image-size", self.image_size, 8),
            ("--bootstrap", self.n_boot, 0),
            ("--workers", self.workers, 0),
            ("--min-crop-px", self.min_crop_px, 0),
        ):
            if v is not None and not v >= lo:  # (not >=: a NaN --min-crop-px too)
                raise DejavuError(f"{flag} must be >= {lo}, got {v}")
        if self.image_size is not None and self.image_size > 4096:
            raise DejavuError(f"--image-size must be <= 4096, got {self.image_size}")
