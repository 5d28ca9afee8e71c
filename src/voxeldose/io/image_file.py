"""Scans from research reconstructions and 3D Slicer: NIfTI, NRRD and MetaImage files.

:func:`load_image_file` reads one 3-D scalar image with SimpleITK (geometry converted to DICOM
LPS by ITK: NIfTI's RAS and NRRD's ``space`` included) into an :class:`~voxeldose.Image` whose
units and times are unknown (``units=""``, no metadata): the case file says what the file
cannot (``scan_units``, ``scan_time``, ``decay_correction``), and :func:`voxeldose.calibrate`
refuses to guess them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..image import Image, ImageMeta
from ._sitk import from_sitk, read_image_file

__all__ = ["load_image_file", "IMAGE_FILE_SUFFIXES", "is_image_file"]

#: File name endings read as images (not DICOM) by :func:`voxeldose.load_image`.
IMAGE_FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a file named like a NIfTI, NRRD or MetaImage image (a Slicer .seg.nrrd is a VOI file)."""
    name = Path(path).name.lower()
    return name.endswith(IMAGE_FILE_SUFFIXES) and not name.endswith(".seg.nrrd")


def load_image_file(path: str | os.PathLike[str]) -> Image:
    """One 3-D scalar image from a NIfTI, NRRD or MetaImage file, values as float32.

    Raises
    ------
    InputError
        The file cannot be read, or is not one 3-D scalar image (a 4-D series, a vector image:
        the message says how many dimensions and components it has).
    """
    p = Path(path)
    image = read_image_file(p, InputError, "image")
    dimension, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if dimension != 3 or components != 1:
        raise InputError(
            f"{p}: a {dimension}-D image with {components} component(s); a scan must be one 3-D scalar volume "
            "(give one frame of a dynamic series)"
        )
    out = from_sitk(image, units="", meta=ImageMeta(source_files=(str(p),)), dtype=np.float32)
    return out
