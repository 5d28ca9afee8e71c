"""De-identification of what voxeldose writes, after the DICOM Basic Application Level
Confidentiality Profile (PS3.15 Annex E), applied to a :class:`~voxeldose.result.CaseResult`
before its outputs are written.

What the profile asks of the attributes voxeldose carries into its outputs, and what is done:

- **UIDs** (Study, Series, SOP Instance, Frame of Reference: action U, "replace with a non-zero
  length UID that is internally consistent within a set of instances") are replaced by
  :func:`anonymous_uid`: ``2.25.`` and 128 bits of a SHA-256 of the source UID. The same source
  UID gives the same new UID in every output of every case and run, so cases of one study, or a
  dose and its scan's frame of reference, still match; the mapping is one-way, but anyone who
  holds a source UID can compute its image (it is consistent, not secret). DICOM's own UIDs
  (``1.2.840.10008.…``: SOP classes, transfer syntaxes) identify nobody and are kept.
- **Dates and times** (action X/Z/D; here the profile's "Retain Longitudinal Temporal
  Information with Modified Dates" option) are shifted, all of one case by one interval, so that
  the administration is :data:`EPOCH` (2000-01-01 00:00:00); without an administration time the
  scan start is. The intervals that dosimetry needs (administration to scan, frame durations,
  bed offsets) are kept exactly; the calendar date, the time of day and the UTC offset are not.
  A date or time in a case without either anchor is withheld.
- **Patient and study identifiers** (name, ID, birth date, sex, accession number, referring
  physician, study ID, study and series descriptions: action X/Z) are removed from the images'
  metadata, and wherever their text appears in a message (a file name holding the patient's
  name) it is withheld; the RT Dose takes the case id as patient name and ID.
- **Paths** of input files and folders (export folders are often named after the patient) are
  withheld from every text; the provenance holds none (:func:`voxeldose.run_case`).

Texts are searched for UIDs, ISO 8601 and DICOM (DA/DT) dates and date-times, and clock times,
so that a caveat such as "the administration 2026-01-15T10:30:00 is after the scan" comes out as
"the administration 2000-01-01T00:00:00 is after the scan". What is kept: the case id (chosen by
the user, never a patient name), numbers, units, VOI names, the manufacturer and model (kept by
the profile), the radiopharmaceutical.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from .image import Image, ImageMeta
    from .result import CaseResult

__all__ = ["EPOCH", "WITHHELD", "anonymous_uid", "identifying_patterns", "Anonymizer", "anonymizer_for",
           "anonymize_result"]

#: The administration's (else the scan's) date and time in anonymized outputs.
EPOCH = dt.datetime(2000, 1, 1)

#: What replaces a withheld text (an identifier, a path, a date without an anchor).
WITHHELD = "[withheld]"

#: The mapping's fixed prefix: a new version of the mapping changes it.
_SALT = b"voxeldose-anonymize-1:"

_DICOM_ROOT = "1.2.840.10008."

# one pass over a text: a UID first (its components must not be read as dates), then ISO 8601
# date-times and dates, DICOM DT/DA, clock times, and paths
_TOKENS = re.compile(
    r"(?P<uid>(?<![\w.])[0-2](?:\.(?:0|[1-9]\d*)){3,}(?![\w.]))"
    r"|(?P<iso>(?<![\w.])\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?(?![\w.]))"
    r"|(?P<dicom>(?<![\w.])(?:19|20)\d{6}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?(?:[+-]\d{4})?(?![\w.]))"
    r"|(?P<clock>(?<![\w.:])\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?![\w.:]))"
    r"|(?P<path>(?<![\w)\].])(?:[A-Za-z]:\\|~?/)[^\s'\",;()\[\]]+)"
)

_DICOM_DT = re.compile(r"^(\d{8})(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


def anonymous_uid(uid: str) -> str:
    """The anonymized UID of ``uid``: ``2.25.`` and the first 128 bits of SHA-256 over a fixed
    prefix and the UID, as a decimal integer (PS3.5 B.2: a UUID-derived UID, at most 44
    characters). The same ``uid`` always gives the same result; DICOM's own UIDs
    (``1.2.840.10008.…``) are returned unchanged."""
    uid = uid.strip()
    if uid.startswith(_DICOM_ROOT):
        return uid
    digest = hashlib.sha256(_SALT + uid.encode("ascii", "replace")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _naive(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=None)


@dataclass(frozen=True)
class Anonymizer:
    """Shifts times, maps UIDs and withholds identifiers and paths, consistently for one case.

    Attributes
    ----------
    anchor : datetime or None
        The source time that becomes :data:`EPOCH` (the administration, else the scan start);
        None: every date and time is withheld.
    withheld : tuple of str
        Regular expressions of source texts withheld wherever they appear, case-insensitive
        (:func:`identifying_patterns`: the patient's name in any spelling, the IDs, the
        descriptions).

    Example
    -------
    >>> import datetime as dt
    >>> a = Anonymizer(dt.datetime(2026, 1, 15, 10, 30), withheld=identifying_patterns({"PatientName": "Smith^Jo"}))
    >>> a.text("scan 2026-01-16T06:30:00 of /data/Smith/PET, series 1.2.826.0.1.3680043.8.498.1")
    'scan 2000-01-01T20:00:00 of [withheld], series 2.25.115386678272318469673832100703686891772'
    >>> a.text("file SMITH_JO_PET.dcm")
    'file [withheld]_PET.dcm'
    """

    anchor: dt.datetime | None
    withheld: tuple[str, ...] = ()

    # ------------------------------------------------------------------ values

    def datetime(self, t: dt.datetime | None) -> dt.datetime | None:
        """``t`` shifted with the case (naive; None without an anchor)."""
        if t is None or self.anchor is None:
            return None
        if (t.tzinfo is None) != (self.anchor.tzinfo is None):
            return EPOCH + (_naive(t) - _naive(self.anchor))  # the wall clocks, as calibrate compares them
        return EPOCH + (t - self.anchor)

    def time_of_day(self, t: dt.time | None) -> dt.time | None:
        """A time of day shifted by the anchor's time of day (None without an anchor)."""
        if t is None or self.anchor is None:
            return None
        day = dt.datetime.combine(self.anchor.date(), t.replace(tzinfo=None))
        return (EPOCH + (day - _naive(self.anchor)) % dt.timedelta(days=1)).time()

    def text(self, text: str) -> str:
        """``text`` with its identifiers and paths withheld, UIDs mapped and times shifted."""
        for pattern in self.withheld:
            text = re.sub(pattern, WITHHELD, text, flags=re.IGNORECASE)
        return _TOKENS.sub(self._token, text)

    def value(self, value: Any) -> Any:
        """A JSON-able structure with :meth:`text` applied to every string (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        if isinstance(value, dt.datetime):
            shifted = self.datetime(value)
            return shifted if shifted is not None else WITHHELD
        return value

    def meta(self, meta: "ImageMeta") -> "ImageMeta":
        """Image metadata without identifiers: UIDs mapped, times shifted, descriptions, source
        files and identifiers removed."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(meta):
            v = getattr(meta, f.name)
            if f.name.endswith("_uid") and isinstance(v, str) and v:
                changes[f.name] = anonymous_uid(v)
            elif isinstance(v, dt.datetime):
                changes[f.name] = self.datetime(v)
            elif isinstance(v, dt.time):
                changes[f.name] = self.time_of_day(v)
            elif isinstance(v, tuple) and any(isinstance(x, dt.datetime) for x in v):
                changes[f.name] = tuple(self.datetime(x) if isinstance(x, dt.datetime) else x for x in v)
        changes.update(series_description=None, source_files=(), identifiers={}, extra={},
                       geometry_notes=tuple(self.text(n) for n in meta.geometry_notes), anonymized=True)
        return dataclasses.replace(meta, **changes)

    def image(self, image: "Image") -> "Image":
        return dataclasses.replace(image, meta=self.meta(image.meta))

    # ------------------------------------------------------------------ tokens

    def _token(self, m: re.Match[str]) -> str:
        kind, token = m.lastgroup, m.group()
        if kind == "uid":
            return anonymous_uid(token)
        if kind == "path":
            return WITHHELD
        if kind == "iso":
            return self._iso(token)
        if kind == "dicom":
            return self._dicom(token)
        if kind == "clock":
            return self._clock(token)
        return token  # pragma: no cover - every group is handled

    def _iso(self, token: str) -> str:
        if len(token) == 10:  # a date
            try:
                day = dt.date.fromisoformat(token)
            except ValueError:
                return token
            if self.anchor is None:
                return WITHHELD
            return (EPOCH.date() + (day - self.anchor.date())).isoformat()
        try:
            t = dt.datetime.fromisoformat(token.replace("Z", "+00:00"))
        except ValueError:
            return token
        shifted = self.datetime(t)
        return shifted.isoformat() if shifted is not None else WITHHELD

    def _dicom(self, token: str) -> str:
        m = _DICOM_DT.match(token)
        if m is None:  # pragma: no cover - the pattern matched
            return token
        try:
            t = dt.datetime.strptime(m[1], "%Y%m%d")
            t = t.replace(hour=int(m[2] or 0), minute=int(m[3] or 0), second=int(m[4] or 0))
        except ValueError:
            return token  # a number that is not a date (20261399)
        if self.anchor is None:
            return WITHHELD
        if m[2] is None:
            return (EPOCH.date() + (t.date() - self.anchor.date())).strftime("%Y%m%d")
        shifted = self.datetime(t)
        assert shifted is not None
        return shifted.strftime("%Y%m%d%H%M%S")

    def _clock(self, token: str) -> str:
        parts = token.split(":")
        try:
            t = dt.time(int(parts[0]), int(parts[1]), int(float(parts[2])) if len(parts) > 2 else 0)
        except ValueError:
            return token
        shifted = self.time_of_day(t)
        if shifted is None:
            return WITHHELD
        return shifted.strftime("%H:%M:%S" if len(parts) > 2 else "%H:%M")


def identifying_patterns(identifiers: Mapping[str, str], descriptions: tuple[str | None, ...] = ()) -> tuple[str, ...]:
    """Regular expressions (for :class:`Anonymizer`) of a scan's identifying texts: the patient's
    name with its parts in the given or the reversed order joined by any separators
    ("Smith^John", "SMITH_JOHN", "John Smith"), the patient ID, accession number, study ID and
    referring physician, each not inside a longer word or number, and the study description and
    ``descriptions`` (the series') where a message quotes them ('Y90 PET'): a description is
    often a word ("Liver") that messages use. A name's single parts are not searched for either."""
    patterns: set[str] = set()

    def whole(pattern: str) -> str:
        return rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"

    for key in ("PatientName", "ReferringPhysicianName"):
        parts = [p for p in re.split(r"[\^\s,]+", str(identifiers.get(key, "") or "")) if p]
        for order in (parts, parts[::-1]):
            if order and sum(map(len, order)) >= 3:
                patterns.add(whole(r"[^A-Za-z0-9]*".join(re.escape(p) for p in order)))
    for key in ("PatientID", "AccessionNumber", "StudyID"):
        value = str(identifiers.get(key, "") or "").strip()
        if len(value) >= 3:
            patterns.add(whole(re.escape(value)))
    for text in (identifiers.get("StudyDescription"), *descriptions):
        if text and text.strip():
            patterns.add(f"(?<=')({re.escape(text.strip())})(?=')")
    return tuple(sorted(patterns, key=len, reverse=True))  # the longest first


def anonymizer_for(result: "CaseResult") -> Anonymizer:
    """The :class:`Anonymizer` of one case: anchored on its administration time (the case's or
    the calibration's), else its scan start; withholding the scan's patient identifiers and
    descriptions."""
    case = result.case
    times = ((result.provenance.get("calibration", {}) or {}).get("times", {}) or {})
    anchor = case.administration_datetime
    for key in ("administration", "scan_start"):
        if anchor is None and isinstance(times.get(key), Mapping) and times[key].get("value"):
            try:
                anchor = dt.datetime.fromisoformat(str(times[key]["value"]))
            except ValueError:
                pass
    meta = result.dose.meta
    if anchor is None:
        anchor = meta.acquisition_datetime or meta.series_datetime
    return Anonymizer(anchor, identifying_patterns(meta.identifiers, (meta.series_description,)))


def anonymize_result(result: "CaseResult") -> "CaseResult":
    """The result as its anonymized outputs hold it (module documentation): the case's times
    shifted, the images' metadata without identifiers, UIDs mapped, and every caveat and
    provenance text cleaned. A result that is anonymized already is returned as it is.

    Example
    -------
    >>> import datetime as dt, voxeldose
    >>> ph = voxeldose.phantoms.sphere(spacing_xyz_mm=(4.0, 4.0, 4.0))
    >>> case = voxeldose.Case("demo-1", administration_datetime=dt.datetime(2026, 1, 15, 10, 30))
    >>> anonymize_result(voxeldose.compute_case(ph.activity, ph.vois, case)).case.administration_datetime
    datetime.datetime(2000, 1, 1, 0, 0)
    """
    from .result import CaseResult, Caveat

    if not isinstance(result, CaseResult):
        from .errors import InputError

        raise InputError(f"anonymize_result needs a voxeldose CaseResult, got {type(result).__name__}")
    if result.dose.meta.anonymized:
        return result
    a = anonymizer_for(result)
    case = result.case
    if any(re.search(p, case.case_id, flags=re.IGNORECASE) for p in a.withheld):
        from .errors import InputError

        raise InputError(f"case id {case.case_id!r} holds the patient's name or an identifier of the scan's header: the "
                         "anonymized outputs would be named after the patient; choose another case id (--case-id, or "
                         "case_id in the case file)")
    case = dataclasses.replace(
        case, administration_datetime=a.datetime(case.administration_datetime),
        scan_datetime=a.datetime(case.scan_datetime),
        source_path=None if case.source_path is None else a.text(case.source_path))
    provenance = a.value(dict(result.provenance))
    provenance["run_datetime"] = WITHHELD  # the day of the calculation dates the treatment
    provenance["anonymized"] = {
        "profile": "DICOM PS3.15 Basic Application Level Confidentiality Profile, with the Retain Longitudinal "
                   "Temporal Information with Modified Dates option",
        "times": (f"shifted so that the administration (else the scan start) is {EPOCH.isoformat()}; intervals kept"
                  if a.anchor is not None else "withheld (neither an administration nor a scan time)"),
        "uids": "2.25. + 128 bits of SHA-256 of the source UID (consistent across outputs and runs)",
        "identifiers": "patient and study identifiers, descriptions and input paths withheld",
    }
    return dataclasses.replace(
        result, case=case,
        images={k: a.image(v) for k, v in result.images.items()},
        vois={k: a.image(v) for k, v in result.vois.items()},
        crosschecks=a.value(dict(result.crosschecks)),
        radiobiology=a.value(dict(result.radiobiology)),
        caveats=tuple(Caveat(c.stage, a.text(c.message)) for c in result.caveats),
        provenance=provenance,
        plan=a.value(dict(result.plan)) if result.plan else result.plan,
        uncertainty=a.value(dict(result.uncertainty)) if result.uncertainty else result.uncertainty,
    )
