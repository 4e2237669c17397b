"""Reading labelled image folders and decoding images.

The embedded default dataset, :data:`DEFAULT_DATASET`, is the FreedroidRPG character set (39 classes,
1,006 images, GPL-2+ game art); see ``data/freedroidrpg/README.md`` for its provenance.
"""

from pathlib import Path

from .dataset import Dataset, DatasetError, ImageRecord, class_codes, find_images, load_folder, stratified_split
from .images import (
    IMAGE_EXTENSIONS,
    DecodeFailure,
    ImageBatch,
    ImageDecodeError,
    iter_image_batches,
    load_image,
)

#: The embedded default dataset folder, ``ROOT/<character>/<image>.png``.
DEFAULT_DATASET = Path(__file__).resolve().parent / "freedroidrpg"

__all__ = [
    "DEFAULT_DATASET",
    "IMAGE_EXTENSIONS",
    "Dataset",
    "DatasetError",
    "DecodeFailure",
    "ImageBatch",
    "ImageDecodeError",
    "ImageRecord",
    "class_codes",
    "find_images",
    "iter_image_batches",
    "load_folder",
    "load_image",
    "stratified_split",
]
