"""The embed-and-search loop shared by the attack and its control, and the context it reads."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dejavu.attack import dist
from dejavu.attack.config import AttackConfig
from dejavu.attack.crops import SetCrops
from dejavu.attack.embed import ImageCrops, embed_rows
from dejavu.data.imagefolder import DataPaths, DatasetIndex

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from dejavu.partition import Partition
    from dejavu.ssl.checkpoint import LoadedModel


class CropDatasets(Protocol):
    """The crops of an attacked set read from a store of their own instead of decoded from the
    images (``attack(crop_datasets=...)``; ``dejavu.ffcv.betons.crop_datasets`` for
    ``AttackConfig.crops_betons``): a dataset of ``(transform(crop), position)``, the crops
    ``indices``/``boxes`` of set ``which`` in order (refused when the store holds other crops)."""

    def __call__(self, which: str, indices: np.ndarray, boxes: np.ndarray, transform: Callable) -> Dataset: ...


@dataclass
class AttackContext:
    """What every phase of one attack needs: settings, dataset, models, public set."""

    cfg: AttackConfig
    out: Path
    device: str
    paths: DataPaths
    index: DatasetIndex
    part: Partition
    lms: dict[str, LoadedModel]  # "A"/"B"
    image_size: int
    min_px: float
    transform: Callable  # PIL image -> the models' input tensor
    tdesc: str
    public: np.ndarray
    public_labels: np.ndarray

    @property
    def models(self) -> list:
        return [self.lms["A"].model, self.lms["B"].model]

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)


def search_sets(
    st: AttackContext,
    crops: dict[str, SetCrops],
    pub_emb: list[np.ndarray],
    datasets: dict[str, Dataset] | None = None,
    desc: str = "",
    index: DatasetIndex | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Embed the crops of sets A and B with both models and search the public set: the four
    arrays ``X_attk_Y`` (model X, set Y), in the original's contents (dataset indices, labels (n, 1)).
    The one loop behind the attack of the private sets and of the held-out control.

    Args:
        st: the attack's setup. crops: the crops of each set. pub_emb: public embeddings per model.
        datasets: per set, a dataset of ready crops (e.g. read from betons) instead of decoding.
        desc: a prefix for the progress bars (e.g. ``"control "``).
        index: the dataset the crops' indices refer to (default: the attack's; the validation
            images of a control have their own).
    Returns:
        ``{"A_attk_A": {"attk_idxs", "labels", "neighb_idxs", "neighb_labels" | "logits"}, ...}``.
    """
    cfg, index = st.cfg, index or st.index
    arrays: dict[str, dict[str, np.ndarray]] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="dejavu-knn") as pool:  # set A's KNN beside set B's forward
        searches: dict[str, Future] = {}
        for y in "AB":
            sc = crops[y]
            ds = (datasets or {}).get(y)
            if ds is None:
                ds = ImageCrops.of(index, sc.indices, sc.boxes, st.transform)
            embs: list[Any] = embed_rows(  # embed_dataset; under torchrun each rank its share
                st.models,
                ds,
                cfg.embed,
                cfg.batch_size,
                st.device,
                cfg.workers,
                desc=f"{desc}crops {y} embeddings",
                precision=cfg.precision,
            )
            labels = index.targets[sc.indices]
            for x, e in zip("AB", embs):
                name = f"{x}_attk_{y}"
                arrays[name] = {"attk_idxs": sc.indices, "labels": labels[:, None]}
                if cfg.embed == "logits":  # the pool: collectives in one thread, in one order
                    searches[name] = pool.submit(dist.gather, e)
                else:
                    pub = pub_emb["AB".index(x)]
                    searches[name] = pool.submit(
                        dist.knn, e, pub, cfg.k, backend=cfg.knn, device=st.device, desc=f"knn {desc}{name}"
                    )
        for name, search in searches.items():
            if cfg.embed == "logits":
                arrays[name]["logits"] = search.result()
                continue
            _, pos = search.result()
            arrays[name]["neighb_idxs"] = st.public[pos]
            arrays[name]["neighb_labels"] = st.public_labels[pos]
    return arrays
