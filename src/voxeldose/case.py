"""The case record: what the image headers do not say about one treatment, and its file.

A :class:`Case` holds the administered activity and time, the lung shunt and residual
fractions, the sphere type, the role of each VOI, which VOI calibrates a SPECT, and the nuclide
the PET scanner was configured for (confirmed by the user). Build it in Python or read it with
:func:`load_case` from a TOML or JSON file; command-line options override the file through
:meth:`Case.with_overrides`.

Every field but ``case_id`` may be missing (None): a value the calibration needs and does not
find is an error that names the key to add, never a silent default.

Case-file schema
----------------
TOML (``.toml``) or JSON (``.json``), one case per file. Top-level keys (no others are
accepted: a misspelt key is an error, not ignored):

================== ======================= ====================================================
key                type                    meaning
================== ======================= ====================================================
case_id            string, required        names output files (letters, digits, ``. _ -``; at
                                           most 64); never a patient name
administered_gbq   0.01 to 50 (GBq)        activity of the prepared Y-90 dose (vial) at the
                                           administration time, before administration: what
                                           reached the patient is this x (1 - residual)
administration_time ISO 8601 date-time    start of the administration, on the scanner's
                   (string, or a TOML      clock (2024-03-05T10:30:00), or with its UTC
                   date-time)              offset (2024-03-05T10:30:00+01:00): needed when a
                                           daylight-saving change lies between it and the
                                           scan and the scan's header states its offset
lung_shunt_fraction number in [0, 1)       fraction of the delivered activity that reaches
                                           the lungs (0.08 for 8 %)
residual_fraction  number in [0, 1)        fraction of ``administered_gbq`` left in the vial,
                                           lines and catheter after administration
sphere_type        "glass" or "resin"      microsphere product
scanner_nuclide    string                  nuclide the PET scanner was set to (e.g. "Y-90",
                                           "F-18", "Ge-68"), as confirmed by the user
calibration_voi    string                  name of the VOI (a key of ``vois``) whose counts
                                           calibrate a bremsstrahlung SPECT
accept_activity_mismatch true or false     the calibrated activity may differ from the
                                           administered activity by more than a factor 2 (a
                                           warning instead of the error: calibrate)
scan_units         "BQML", "CNTS" or "MBQ" a scan read from a NIfTI, NRRD or MetaImage file:
                                           Bq/mL (Y-90 PET), counts (bremsstrahlung SPECT)
                                           or MBq per voxel at administration
scan_time          ISO 8601 date-time      such a scan's acquisition start
decay_correction   "START", "ADMIN",       such a PET's decay correction (DICOM's terms)
                   "NONE"
vois               table name -> role      role of each VOI: "tumour", "normal_liver",
                                           "whole_liver", "lung" or "perfused"
plan               table                   planning on an MAA SPECT (``voxeldose plan``):
                                           planned activities, lung limits, model targets,
                                           constraints (:mod:`voxeldose.planning`)
radiobiology       table                   alpha/beta, repair half-time, alpha and gEUD's a per
                                           role or VOI, and bed_maps = true for the BED maps
                                           (:mod:`voxeldose.radiobiology`)
uncertainty        table                   n samples, seed, and the inputs' standard
                                           uncertainties over the stated defaults
                                           (:mod:`voxeldose.uncertainty`)
================== ======================= ====================================================

Example (TOML)::

    case_id = "tare-017"
    administered_gbq = 2.5
    administration_time = 2024-03-05T10:30:00
    lung_shunt_fraction = 0.06
    residual_fraction = 0.02
    sphere_type = "glass"
    scanner_nuclide = "Y-90"

    [vois]
    liver = "whole_liver"
    "segment 8 lesion" = "tumour"
    lungs = "lung"

In JSON the same keys, with ``"vois": {...}`` and ``null`` for a missing value.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from ._checks import check_fraction, check_number
from .errors import InputError
from .nuclides import normalise_nuclide

if TYPE_CHECKING:
    from .planning import PlanSettings
    from .radiobiology import RadiobiologySettings
    from .uncertainty import UncertaintySettings

__all__ = ["Case", "case_from_dict", "VOI_ROLES", "SPHERE_TYPES", "CASE_FILE_KEYS"]

#: Roles a VOI can have in a case.
VOI_ROLES: tuple[str, ...] = ("tumour", "normal_liver", "whole_liver", "lung", "perfused", "body")

#: Units a case file may give a scan read from a NIfTI, NRRD or MetaImage file.
SCAN_UNITS: tuple[str, ...] = ("BQML", "CNTS", "MBQ")

#: What ``scan_modality`` may say (DICOM Modality; "PET" and "SPECT" are accepted for them).
SCAN_MODALITIES: Mapping[str, str] = MappingProxyType({"PT": "PT", "PET": "PT", "NM": "NM", "SPECT": "NM"})

#: Microsphere products.
SPHERE_TYPES: tuple[str, ...] = ("glass", "resin")

#: Case-file key -> :class:`Case` field.
CASE_FILE_KEYS: Mapping[str, str] = MappingProxyType({
    "case_id": "case_id",
    "administered_gbq": "administered_gbq",
    "administration_time": "administration_datetime",
    "lung_shunt_fraction": "lung_shunt_fraction",
    "residual_fraction": "residual_fraction",
    "sphere_type": "sphere_type",
    "scanner_nuclide": "scanner_nuclide",
    "accept_activity_mismatch": "accept_activity_mismatch",
    "scan_modality": "scan_modality",
    "scan_units": "scan_units",
    "scan_time": "scan_datetime",
    "decay_correction": "decay_correction",
    "calibration_voi": "calibration_voi",
    "vois": "voi_roles",
    "plan": "plan",
    "radiobiology": "radiobiology",
    "uncertainty": "uncertainty",
})

_FIELD_TO_KEY = {v: k for k, v in CASE_FILE_KEYS.items()}

#: Largest plausible administered activity (GBq): Y-90 microsphere vials hold at most 20 GBq,
#: so a larger number is a unit mistake (MBq written as GBq).
MAX_ADMINISTERED_GBQ = 50.0

#: Smallest plausible administered activity (GBq): 10 MBq, a tenth of the smallest clinical Y-90
#: administration (a segmental dose to a small lesion, about 0.1 GBq); a smaller number is a unit
#: mistake (TBq written as GBq) or a typing error (1e-12).
MIN_ADMINISTERED_GBQ = 0.01

_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# ---------------------------------------------------------------------------- field checks


def _number(value: object, name: str, where: str, unit: str) -> float:
    return check_number(value, f"{where}: {name}", unit)


def _fraction(value: object, name: str, where: str, meaning: str) -> float:
    return check_fraction(value, f"{where}: {name}", meaning)


def _check_field(name: str, value: Any, where: str) -> Any:
    """Validate and normalise one :class:`Case` field (None stays None, except ``case_id``)."""
    if name == "case_id":
        if not isinstance(value, str) or not _CASE_ID.match(value):
            raise InputError(
                f"{where}: case_id must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                f"letter or digit, got {value!r}; it names the output files (never use a patient's name)"
            )
        return value
    if value is None:
        return None
    if name == "administered_gbq":
        x = _number(value, name, where, "GBq")
        if x <= 0.0:
            raise InputError(f"{where}: administered_gbq must be > 0 GBq, got {value!r}")
        if x < MIN_ADMINISTERED_GBQ:
            raise InputError(
                f"{where}: administered_gbq = {value!r} GBq is less than {MIN_ADMINISTERED_GBQ:g} GBq "
                f"({MIN_ADMINISTERED_GBQ * 1e3:g} MBq), a tenth of the smallest clinical Y-90 administration; "
                "is it in TBq? Write GBq (2.5 for 2500 MBq)"
            )
        if x > MAX_ADMINISTERED_GBQ:
            raise InputError(
                f"{where}: administered_gbq = {value!r} GBq is more than any Y-90 vial holds "
                f"({MAX_ADMINISTERED_GBQ:g} GBq); is it in MBq? Write GBq (2.5 for 2500 MBq)"
            )
        return x
    if name == "administration_datetime":
        return _check_datetime(value, where)
    if name == "lung_shunt_fraction":
        return _fraction(value, name, where, "the fraction of the delivered activity that reaches the lungs")
    if name == "residual_fraction":
        return _fraction(value, name, where, "the fraction of the activity left in the vial, lines and catheter")
    if name == "sphere_type":
        if not isinstance(value, str) or value.strip().lower() not in SPHERE_TYPES:
            raise InputError(f"{where}: sphere_type must be one of {', '.join(map(repr, SPHERE_TYPES))}, got {value!r}")
        return value.strip().lower()
    if name == "scanner_nuclide":
        nuclide = normalise_nuclide(value)
        if nuclide is None:
            raise InputError(
                f"{where}: scanner_nuclide {value!r} is not a nuclide name; write it like "
                "'Y-90', 'F-18', 'Ga-68' or 'Ge-68'"
            )
        return nuclide
    if name == "scan_modality":
        modality = SCAN_MODALITIES.get(value.strip().upper()) if isinstance(value, str) else None
        if modality is None:
            raise InputError(f"{where}: scan_modality must be 'PT' (Y-90 PET) or 'NM' (bremsstrahlung SPECT), "
                             f"got {value!r}")
        return modality
    if name == "scan_units":
        units = value.strip().upper() if isinstance(value, str) else None
        if units not in SCAN_UNITS:
            raise InputError(f"{where}: scan_units must be one of {', '.join(map(repr, SCAN_UNITS))} (Bq/mL, counts, "
                             f"MBq per voxel at administration), got {value!r}")
        return units
    if name == "decay_correction":
        mode = value.strip().upper() if isinstance(value, str) else None
        if mode not in ("START", "ADMIN", "NONE"):
            raise InputError(f"{where}: decay_correction must be 'START', 'ADMIN' or 'NONE', got {value!r}")
        return mode
    if name == "scan_datetime":
        return _check_datetime(value, where, "scan time")
    if name == "accept_activity_mismatch":
        if not isinstance(value, bool):
            raise InputError(f"{where}: accept_activity_mismatch must be true or false, got {value!r}")
        return bool(value)
    if name == "calibration_voi":
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: calibration_voi must be a VOI name (a non-empty string), got {value!r}")
        return value
    if name == "plan":
        from .planning import plan_settings_from_dict

        return plan_settings_from_dict(value, where=f"{where} [plan]")
    if name == "radiobiology":
        from .radiobiology import radiobiology_settings_from_dict

        # "case file X [radiobiology]": the provenance of every value the table gives
        return radiobiology_settings_from_dict(value, where=where.replace(", key 'radiobiology'", "") + " [radiobiology]")
    if name == "uncertainty":
        from .uncertainty import uncertainty_settings_from_dict

        return uncertainty_settings_from_dict(value, where=where.replace(", key 'uncertainty'", "") + " [uncertainty]")
    if name == "voi_roles":
        if not isinstance(value, Mapping):
            raise InputError(
                f"{where}: vois must be a table of VOI name -> role (e.g. liver = \"whole_liver\"), "
                f"got {type(value).__name__}"
            )
        roles: dict[str, str] = {}
        for voi, role in value.items():
            if not isinstance(voi, str) or not voi.strip():
                raise InputError(f"{where}: VOI names must be non-empty strings, got {voi!r}")
            if role not in VOI_ROLES:
                raise InputError(
                    f"{where}: VOI {voi!r} has role {role!r}; roles are {', '.join(map(repr, VOI_ROLES))}"
                )
            roles[voi] = role
        return MappingProxyType(roles)
    raise InputError(f"{where}: unknown case field {name!r}")  # pragma: no cover - internal


def _check_datetime(value: object, where: str, what: str = "administration time") -> _dt.datetime:
    key = "administration_time" if what == "administration time" else "scan_time"
    if isinstance(value, str):
        text = value.strip()
        if not re.search(r"\d[T ]\d", text):
            raise InputError(
                f"{where}: {what} {value!r} has no time of day; write a local date and "
                "time like 2024-03-05T10:30:00"
            )
        try:
            value = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise InputError(
                f"{where}: {what} {text!r} is not ISO 8601; write a local date and time "
                "like 2024-03-05T10:30:00"
            ) from None
    if not isinstance(value, _dt.datetime):
        kind = "a date without a time of day" if isinstance(value, _dt.date) else type(value).__name__
        raise InputError(
            f"{where}: {key} must be a date and time (datetime, or ISO 8601 text like "
            f"2024-03-05T10:30:00), got {kind}"
        )
    return value


# ---------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Case:
    """One treatment: the values the calibration and reports need that images do not hold.

    Attributes
    ----------
    case_id : str
        Names the outputs (letters, digits, ``. _ -``; at most 64). Never a patient name.
    administered_gbq : float or None
        Activity of the prepared Y-90 dose (vial) at ``administration_datetime`` (GBq), before
        administration. The activity that reached the patient is ``administered_gbq x (1 -
        residual_fraction)``; the part that reached the liver also excludes the lung shunt.
    administration_datetime : datetime or None
        Start of the administration: naive, on the scanner's local clock (like DICOM times), or
        aware (with its UTC offset; compared exactly with scan times whose offset the header
        states, TimezoneOffsetFromUTC or a DT's own).
    lung_shunt_fraction : float or None
        Fraction of the delivered activity that lodges in the lungs, 0 <= LSF < 1.
    residual_fraction : float or None
        Fraction of ``administered_gbq`` left in the vial, lines and catheter, 0 <= r < 1.
    sphere_type : {"glass", "resin"} or None
    voi_roles : mapping VOI name -> role
        Roles: :data:`VOI_ROLES`. Several VOIs may share a role (e.g. tumours).
    calibration_voi : str or None
        The VOI whose counts calibrate a bremsstrahlung SPECT; None: see
        :attr:`calibration_voi_name`.
    accept_activity_mismatch : bool or None
        True: a calibrated activity more than a factor 2 from the administered one (net of shunt
        and residual) is a warning, not an error (:func:`voxeldose.calibrate`).
    scan_modality : {"PT", "NM"} or None
        Which scan the case is computed on, Y-90 PET or bremsstrahlung SPECT: it chooses the
        emission series of a batch case folder that holds both, and the loaded scan's Modality
        must agree with it (``"PET"`` and ``"SPECT"`` are accepted for them).
    scan_units, scan_datetime, decay_correction : str, datetime, str or None
        What a scan read from a NIfTI, NRRD or MetaImage file cannot say: its units ("BQML",
        "CNTS", "MBQ"), its acquisition start and (PET) its decay correction ("START", "ADMIN",
        "NONE"). For a DICOM scan they must agree with the header.
    scanner_nuclide : str or None
        Nuclide the PET scanner was configured for, as confirmed by the user (``"Y-90"``,
        ``"F-18"``, ``"Ga-68"``, ``"Ge-68"``); None when not confirmed. Spellings are
        normalised (``"18F"`` -> ``"F-18"``).
    plan : PlanSettings or None
        The case file's ``[plan]`` (:mod:`voxeldose.planning`).
    radiobiology : RadiobiologySettings or None
        The case file's ``[radiobiology]`` (:mod:`voxeldose.radiobiology`): parameters per role
        or VOI over the sourced defaults, and whether to write the BED maps.
    uncertainty : UncertaintySettings or None
        The case file's ``[uncertainty]`` (:mod:`voxeldose.uncertainty`): the number of samples,
        the seed and the inputs' standard uncertainties; None or ``n = 0``: no analysis.
    source_path : str or None
        The case file it was read from (not compared).
    overridden_fields : tuple of str
        Fields set by :meth:`with_overrides` (not compared); provenance reports them as overrides.
    overridden_roles : tuple of str
        VOI names whose role :meth:`with_overrides` set (not compared), e.g. by ``--voi-role``.

    Raises
    ------
    InputError
        If a value has the wrong type or is out of range (the message names the field).

    Example
    -------
    >>> import datetime as dt
    >>> case = Case("tare-017", administered_gbq=2.5, lung_shunt_fraction=0.06,
    ...             administration_datetime=dt.datetime(2024, 3, 5, 10, 30),
    ...             voi_roles={"liver": "whole_liver", "lesion": "tumour"})
    >>> case.calibration_voi_name
    'liver'
    >>> case.with_overrides(lung_shunt_fraction=0.1).lung_shunt_fraction
    0.1
    """

    case_id: str
    administered_gbq: float | None = None
    administration_datetime: _dt.datetime | None = None
    lung_shunt_fraction: float | None = None
    residual_fraction: float | None = None
    sphere_type: str | None = None
    voi_roles: Mapping[str, str] = field(default_factory=dict, hash=False)
    calibration_voi: str | None = None
    scanner_nuclide: str | None = None
    accept_activity_mismatch: bool | None = None
    scan_modality: str | None = None
    scan_units: str | None = None
    scan_datetime: _dt.datetime | None = None
    decay_correction: str | None = None
    plan: "PlanSettings | None" = field(default=None, hash=False)
    radiobiology: "RadiobiologySettings | None" = field(default=None, hash=False)
    uncertainty: "UncertaintySettings | None" = field(default=None, hash=False)
    source_path: str | None = field(default=None, compare=False)
    overridden_fields: tuple[str, ...] = field(default=(), compare=False)
    overridden_roles: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        where = f"case file {self.source_path}" if self.source_path else "Case"
        for name in _VALUE_FIELDS:
            object.__setattr__(self, name, _check_field(name, getattr(self, name), where))
        if self.voi_roles is None:
            object.__setattr__(self, "voi_roles", MappingProxyType({}))
        if self.calibration_voi is not None and self.voi_roles and self.calibration_voi not in self.voi_roles:
            raise InputError(
                f"{where}: calibration_voi {self.calibration_voi!r} is not one of the VOIs "
                f"({', '.join(map(repr, self.voi_roles))}); use one of those names or add it to vois"
            )
        object.__setattr__(self, "overridden_fields", tuple(self.overridden_fields))

    # ------------------------------------------------------------------ derived

    def vois_with_role(self, role: str) -> tuple[str, ...]:
        """Names of the VOIs with ``role`` (one of :data:`VOI_ROLES`), in file order."""
        if role not in VOI_ROLES:
            raise InputError(f"unknown VOI role {role!r}; roles are {', '.join(map(repr, VOI_ROLES))}")
        return tuple(name for name, r in self.voi_roles.items() if r == role)

    @property
    def calibration_voi_name(self) -> str | None:
        """The VOI that calibrates a SPECT: ``calibration_voi`` when given; otherwise the one VOI
        with role "perfused" (the treated territory holds all the delivered, non-shunted
        activity); otherwise the one VOI with role "whole_liver"; otherwise None (none, or
        several of the role: then set ``calibration_voi``)."""
        if self.calibration_voi is not None:
            return self.calibration_voi
        for role in ("perfused", "whole_liver"):
            names = self.vois_with_role(role)
            if len(names) == 1:
                return names[0]
            if len(names) > 1:
                return None
        return None

    def source_of(self, name: str) -> str:
        """Where the value of field ``name`` came from: "override", the case file and key, or
        "Case" (built in Python)."""
        if name in self.overridden_fields:
            return "override"
        if self.source_path:
            return f"case file {self.source_path} (key {_FIELD_TO_KEY.get(name, name)!r})"
        return "Case"

    def role_source(self, voi: str) -> str:
        """Where the role of VOI ``voi`` came from: an override (``--voi-role``), the case file's
        ``[vois]`` table, or a Case built in Python."""
        if voi in self.overridden_roles:
            return "override (--voi-role)"
        if self.source_path:
            return f"case file {self.source_path}, [vois]"
        return "Case(voi_roles=...)"

    def to_dict(self) -> dict[str, Any]:
        """The case in the case-file schema (JSON-able; times as ISO 8601 text)."""
        out: dict[str, Any] = {}
        for key, name in CASE_FILE_KEYS.items():
            value = getattr(self, name)
            if isinstance(value, _dt.datetime):
                value = value.isoformat()
            elif name in ("plan", "radiobiology", "uncertainty"):
                value = None if value is None else value.to_dict()
            elif isinstance(value, Mapping):
                value = dict(value)
            out[key] = value
        return out

    # ------------------------------------------------------------------ overrides

    def with_overrides(self, **values: Any) -> "Case":
        """A new case where each non-None value replaces the case's (command-line options
        override the file).

        Parameters
        ----------
        **values
            :class:`Case` fields by name (``administered_gbq=``, ``administration_datetime=``,
            ``lung_shunt_fraction=``, ``scanner_nuclide=``, ...). None leaves a field as it is.
            ``voi_roles=`` adds roles to the case's (or changes a VOI's role).

        Raises
        ------
        InputError
            For an unknown field name (the message lists the allowed ones) or a bad value.
        """
        allowed = OVERRIDE_FIELDS
        unknown = [k for k in values if k not in allowed]
        if unknown:
            raise InputError(
                f"unknown case option(s) {', '.join(map(repr, unknown))}{_did_you_mean(unknown, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )
        values = dict(values)
        samples = values.get("uncertainty")
        if (isinstance(samples, Mapping) and self.uncertainty is not None and set(samples) <= {"n", "seed"}):
            # --uncertainty N / --seed S: the case file's [uncertainty] keeps its inputs and their source
            values["uncertainty"] = self.uncertainty.with_samples(**samples)
        changes = {k: _check_field(k, v, f"override {k}") for k, v in values.items() if v is not None}
        if not changes:
            return self
        roles = self.overridden_roles
        if "voi_roles" in changes:
            # roles given as overrides add to (or change) those of the case, as --voi-role does
            roles = roles + tuple(n for n in changes["voi_roles"] if n not in roles)
            changes["voi_roles"] = MappingProxyType({**dict(self.voi_roles), **dict(changes["voi_roles"])})
        done = self.overridden_fields + tuple(k for k in changes if k not in self.overridden_fields)
        return replace(self, overridden_fields=done, overridden_roles=roles, **changes)


_VALUE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Case) if f.name not in ("source_path", "overridden_fields", "overridden_roles")
)

#: Field names accepted by :meth:`Case.with_overrides` and as overrides of ``calibrate``.
OVERRIDE_FIELDS: tuple[str, ...] = _VALUE_FIELDS


def _did_you_mean(words: list[str], allowed: tuple[str, ...] | list[str]) -> str:
    hints = []
    for w in words:
        close = difflib.get_close_matches(w, list(allowed), n=1, cutoff=0.6)
        if close:
            hints.append(f"{w!r} -> {close[0]!r}")
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


# ---------------------------------------------------------------------------- the schema


def case_from_dict(data: Mapping[str, Any], *, source: str) -> Case:
    """A :class:`Case` from the keys of a case file (the schema of the module documentation).

    ``source`` names where the keys came from in messages and provenance (the file's path).

    Raises
    ------
    InputError
        An unknown key (the message lists the allowed keys and the nearest one), a missing
        ``case_id``, or a value of the wrong type or range (the message names the key).
    """
    if not isinstance(data, Mapping):
        raise InputError(f"case file {source}: the top level must be a table of keys, got {type(data).__name__}")
    allowed = list(CASE_FILE_KEYS)
    unknown = [k for k in data if k not in CASE_FILE_KEYS]
    if unknown:
        raise InputError(
            f"case file {source}: unknown key(s) {', '.join(map(repr, unknown))}{_did_you_mean(unknown, allowed)}; "
            f"allowed keys: {', '.join(allowed)}"
        )
    if data.get("case_id") is None:
        raise InputError(f"case file {source}: key 'case_id' is missing; add e.g. case_id = \"tare-017\"")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = CASE_FILE_KEYS[key]
        values[name] = _check_field(name, value, f"case file {source}, key {key!r}")
    if values.get("voi_roles") is None:
        values["voi_roles"] = {}
    return Case(**values, source_path=source)
