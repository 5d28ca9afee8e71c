"""DICOM helpers shared by the writers (result files and series) and readers of voxeldose.io."""

from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import DicomError

__all__ = ["ds_values", "new_uid", "file_meta", "pixel_module", "read_dicom", "read_datasets",
           "native_pixel_bytes_match", "shared_reads", "not_dicom_reason"]


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


def pixel_module(ds: Any, rows: int, cols: int, *, signed: bool) -> None:
    """The Image Pixel module of a 16-bit grey-scale image: ``rows`` x ``cols``, (un)signed."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0


def read_dicom(path: str | Path, *, pixels: bool | str = "deferred", whole_file: bool = False) -> Any | None:
    """Read one DICOM file: the dataset, or None when the file is not DICOM at all.

    The one DICOM reader of voxeldose, with one error rule: a file that is not DICOM (no
    preamble and no recognisable elements) is None, for the caller to skip; a file that is DICOM
    but damaged (truncated, corrupt, an element shorter than its stated length) is a
    :class:`DicomError` naming it, never skipped, since a skipped file can lose a slice or a VOI.

    Parameters
    ----------
    path : path
    pixels : {"deferred", True, False}
        "deferred": values over 4 kB (pixel data) are read later, from the file, when used;
        True: everything now; False: stop before the pixel data (headers only).
    whole_file : bool
        Also check that the file does not end inside an element after the last one read
        (for files read whole).
    """
    p = Path(path)
    shared = _SHARED.get() if pixels == "deferred" and not whole_file else None
    if shared is not None:
        try:
            st = p.stat()
        except OSError as exc:
            raise DicomError(f"{p}: cannot be read ({exc})") from exc
        key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in shared:
            shared[key] = _read(p, pixels, whole_file)
        return shared[key]
    return _read(p, pixels, whole_file)


#: The files :func:`read_dicom` has read within :func:`shared_reads` (None outside it).
_SHARED: contextvars.ContextVar[dict[tuple[str, int, int, int], Any] | None] = contextvars.ContextVar(
    "voxeldose_shared_reads", default=None)


@contextlib.contextmanager
def shared_reads() -> Iterator[None]:
    """Within it, :func:`read_dicom` parses each image file's header once (``pixels="deferred"``
    reads, by path, inode, size and modification time: a file changed meanwhile is read again)
    and returns the same dataset again: a case's loading lists its folder's series, loads the
    scan from them and then the CT, and a batch worker first finds the case in the same files.
    The datasets are the readers' only, which do not change them (a deferred pixel value read
    stays in its dataset).

    A scope within another shares the outer one's reads; the end of either forgets them all, so
    that no header, nor pixel data read through one, outlives the loading it served. Each thread
    has its own (a context variable)."""
    token = _SHARED.set({}) if _SHARED.get() is None else None
    try:
        yield
    finally:
        shared = _SHARED.get()
        if shared is not None:
            shared.clear()
        if token is not None:
            _SHARED.reset(token)


def _read(p: Path, pixels: bool | str, whole_file: bool) -> Any | None:
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    options: dict[str, Any] = {"defer_size": 4096} if pixels == "deferred" else {"stop_before_pixels": not pixels}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(p, **options)
    except InvalidDicomError:
        return None
    except Exception as exc:  # truncated or corrupt: pydicom raises many kinds
        raise DicomError(f"{p}: unreadable DICOM file ({type(exc).__name__}: {exc}); re-export it") from exc
    for w in caught:
        text = str(w.message)
        if "End of file" in text or "EOF" in text:
            raise DicomError(f"{p}: the DICOM file is truncated ({text}); re-export or copy it again")
    _check_complete(ds, p, whole_file=whole_file)
    return ds


#: Extensions of DICOM files: a file so named that is not DICOM is a damaged copy.
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".dic"}

#: A DICOM file with a preamble is at least 132 bytes (128-byte preamble and "DICM", PS3.10 7.1).
_PREAMBLE_BYTES = 132

#: The AppleDouble header's magic number (RFC 1740): macOS writes a "._NAME" file of it beside
#: each file it copies to a disk that has no place for the file's metadata (FAT, exFAT, many
#: network shares), so an export copied from a Mac holds a "._IM0001.dcm" beside IM0001.dcm.
_APPLE_DOUBLE = b"\x00\x05\x16\x07"


def not_dicom_reason(path: Path) -> str | None:
    """For a file :func:`read_dicom` found not to be DICOM: why it is a damaged DICOM file (to
    refuse, naming it), or None when it is simply another file (to skip). A skipped slice at
    either end of a series is undetectable, and a skipped VOI file loses its VOIs, so an empty
    file, a file named like a DICOM file, and a file without a suffix too short for DICOM's
    preamble are damaged; an AppleDouble "._" file (its name and its magic number) is macOS's
    sidecar of the file it names, not a copy of it."""
    try:
        size = path.stat().st_size
        if path.name.startswith("._") and size >= 4:
            with path.open("rb") as fh:
                if fh.read(4) == _APPLE_DOUBLE:
                    return None
    except OSError as exc:
        return f"the file cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "the file is empty (0 bytes)"
    if path.suffix.lower() in DICOM_SUFFIXES:
        return f"the file is named {path.suffix} but is not DICOM ({size} bytes): truncated or damaged"
    if size < _PREAMBLE_BYTES and not path.suffix:
        return f"the file holds only {size} bytes, too few for a DICOM file: truncated"
    return None


#: Deflated Explicit VR Little Endian (PS3.5 A.5): the data set is a zlib stream in the file.
_DEFLATED = "1.2.840.10008.1.2.1.99"


def _check_complete(ds: Any, p: Path, *, whole_file: bool) -> None:
    """Raise when the file was cut: a top-level element holds fewer bytes than its stated length,
    or (``whole_file``) bytes too few for another element follow the last one. A deferred element
    (pixel data read later, when used) is checked against the file's size, without reading it: a
    header scan of a series reads no pixel data. A deflated file's positions are those of its
    inflated stream, not of the file: there a deferred element is read to be checked."""
    end = None
    size = None
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    keep = syntax != _DEFLATED
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=keep)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        tell = getattr(raw, "value_tell", None)
        if value is None and isinstance(length, int) and length not in (0, 0xFFFFFFFF) and isinstance(tell, int):
            size = p.stat().st_size if size is None else size  # deferred: the value lies in the file
            if size < tell + length:
                raise DicomError(
                    f"{p}: the DICOM file is truncated in {tag} {getattr(raw, 'VR', '')} ({max(0, size - tell)} of "
                    f"{length} bytes); re-export or copy it again"
                )
            end = tell + length
        elif isinstance(value, bytes) and isinstance(length, int) and length != 0xFFFFFFFF:
            if len(value) < length:
                raise DicomError(
                    f"{p}: the DICOM file is truncated in {tag} {getattr(raw, 'VR', '')} ({len(value)} of "
                    f"{length} bytes); re-export or copy it again"
                )
            end = tell + length if isinstance(tell, int) else None
        else:
            end = None
    if whole_file and end is not None:
        size = p.stat().st_size
        if 0 < size - end < 8:  # not even a tag and a length: the file stops inside an element
            raise DicomError(f"{p}: the DICOM file is truncated after byte {end}; re-export or copy it again")


def read_datasets(paths: Sequence[str | Path]) -> list[Any]:
    """The datasets of ``paths`` (headers only), e.g. to reference a series; each must be DICOM."""
    out = []
    for path in paths:
        ds = read_dicom(path, pixels=False)
        if ds is None:
            raise DicomError(f"{path} is not a DICOM file")
        out.append(ds)
    return out


def native_pixel_bytes_match(length: int, rows: int, cols: int, frames: int, bits: int) -> tuple[bool, int]:
    """Whether uncompressed pixel data of ``length`` bytes is exactly ``frames`` frames of ``rows``
    x ``cols`` pixels of ``bits`` bits, padded to an even length (PS3.5 8.1.1, 8.2); and the
    bytes they describe. More bytes are not padding but a wrong Rows, Columns or frame count:
    read as described they shear or crop every frame."""
    expected = (rows * cols * frames * bits + 7) // 8
    return length in (expected, expected + expected % 2), expected
