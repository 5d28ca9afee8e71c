"""DICOM helpers shared by the writers (result files and series) and readers of voxeldose.io."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["ds_values", "new_uid", "file_meta", "read_datasets"]


def ds_values(values: Any) -> Any:
    """Numbers as DICOM DS strings of at most 16 characters (PS3.5 6.2), precision kept."""
    from pydicom.valuerep import format_number_as_ds

    if np.ndim(values) == 0:
        return format_number_as_ds(float(values))
    return [format_number_as_ds(float(v)) for v in values]


def new_uid() -> str:
    """A new DICOM UID (pydicom's root, random suffix)."""
    from pydicom.uid import generate_uid

    return str(generate_uid())


def file_meta(ds: Any) -> None:
    """Give ``ds`` its File Meta Information (Explicit VR Little Endian), from its SOP class and instance."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def read_datasets(paths: Sequence[str | Path]) -> list[Any]:
    """The pydicom datasets of ``paths`` (headers only), e.g. to reference a series."""
    import pydicom

    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
