"""Input and output at the edges: what voxeldose reads and what it writes.

Only this subpackage touches pydicom, highdicom and SimpleITK file I/O.

Readers: :func:`load_image` (DICOM PET, SPECT, CT), :func:`list_series`, :func:`load_vois`
(RTSTRUCT, SEG, label maps), :func:`load_ct` (a CT on the scan's grid, for the report), :func:`load_case` (case files), :func:`load_vsv_tables` (published
voxel S-value tables a user holds).

Writers: :func:`write_nifti`, :func:`write_rtdose`, :func:`write_dvh_csv`,
:func:`write_metrics_json`, :func:`write_report` and :func:`write_result` (every output of a
:class:`~voxeldose.result.CaseResult`, atomically); :func:`write_rtstruct`, :func:`write_seg`
(VOIs as DICOM); :func:`write_comparison` (a predicted-against-delivered
:class:`~voxeldose.compare.Comparison`, atomically), with :func:`load_dose_result` and
:func:`load_transform` to read its inputs; :mod:`voxeldose.io.series` (images as DICOM series, the way scanners export
them: the phantoms' export and the tests use it).
"""

from .case_file import load_case
from .comparison import load_dose_result, load_transform, write_comparison
from .ct import load_ct, load_ct_density, load_hu_table
from .dicom import list_series, load_image
from .kernel_tables import load_vsv_tables, read_vsv_table
from .results import (
    write_dvh_csv,
    write_metrics_json,
    write_nifti,
    write_report,
    write_result,
    write_rtdose,
)
from .vois import load_vois
from .write_vois import write_rtstruct, write_seg

__all__ = [
    "load_image",
    "list_series",
    "load_vois",
    "load_case",
    "load_ct",
    "load_ct_density",
    "load_hu_table",
    "load_vsv_tables",
    "read_vsv_table",
    "write_result",
    "write_report",
    "write_nifti",
    "write_rtdose",
    "write_dvh_csv",
    "write_metrics_json",
    "write_rtstruct",
    "write_seg",
    "load_dose_result",
    "load_transform",
    "write_comparison",
]
