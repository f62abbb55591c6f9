"""Datasets in ImageNet's layout: the ImageFolder index with its fingerprint,
Pascal-VOC bounding boxes, the synthetic generator and the transforms."""

from dejavu.data.annotations import Annotation, read_voc_xml
from dejavu.data.imagefolder import DataPaths, DatasetIndex, Fingerprint, scan_imagefolder

__all__ = [
    "Annotation",
    "DataPaths",
    "DatasetIndex",
    "Fingerprint",
    "read_voc_xml",
    "scan_imagefolder",
]
