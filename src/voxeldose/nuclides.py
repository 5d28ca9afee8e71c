"""The radionuclides of Y-90 imaging and planning: one table of half-lives, positron fractions and DICOM codes.

A PET scanner that images Y-90 is often configured for another nuclide (F-18, Ga-68 or
Ge-68, whose calibration sources are at hand): it converts its positron rate to activity with
that nuclide's positron fraction and decay-corrects with that nuclide's half-life. Calibration
(:mod:`voxeldose.calibrate`) undoes both, and the phantoms' scanner model
(:mod:`voxeldose.phantoms.export`) applies them; both read this one table, so that a value typed
wrongly here cannot cancel out in a round trip. ``tests/test_nuclides.py`` checks every entry
against the ICRP-107 decay data (the ``icrp107-database`` package) and the codes against
DICOM CID 4020.

Ge-68 decays by electron capture and emits no positron itself: calibration sources hold it in
secular equilibrium with its positron-emitting daughter Ga-68, so scanner settings for Ge-68
combine Ga-68's positron fraction with Ge-68's half-life.

:data:`SPECT_NUCLIDES` is a separate table, of the single-photon nuclides of planning (Tc-99m of
the MAA SPECT): they emit no positron, so they are never a PET scanner's setting and calibration
(:data:`NUCLIDES`) does not accept them; their codes are recognised (:func:`nuclide_of_code`), so
that a scan naming one is refused by name.

References
----------
.. [ICRP107] ICRP Publication 107, "Nuclear decay data for dosimetric calculations", Ann. ICRP
   38(3), 2008. doi:10.1016/j.icrp.2008.10.004 (half-lives; beta+ yields of F-18 and Ga-68).
.. [Selwyn2007] Selwyn RG et al., Appl Radiat Isot 65:318-327, 2007.
   doi:10.1016/j.apradiso.2006.08.009 (Y-90 internal-pair-production yield 31.86e-6).
.. [CID4020] DICOM PS3.16, CID 4020 "PET Radionuclide" (SNOMED-RT code values and their SNOMED
   CT equivalents); C-162A7 is ^90^Yttrium, C-162A3 is ^86^Yttrium.
.. [CID18] DICOM PS3.16, CID 18 "Radionuclide" (Isotopes in Radiopharmaceuticals): C-163A8
   (SNOMED CT 72454006) is ^99m^Technetium.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from . import constants as C

__all__ = [
    "Nuclide",
    "NUCLIDES",
    "Y90",
    "SpectNuclide",
    "SPECT_NUCLIDES",
    "TC99M",
    "RADIONUCLIDE_CODES",
    "normalise_nuclide",
    "nuclide_of_code",
]


@dataclass(frozen=True)
class Nuclide:
    """A nuclide a PET scanner may be configured for, with the sources of its numbers.

    Attributes
    ----------
    name : str
        ``"Y-90"``, ``"F-18"``, ...
    half_life_s : float
        Physical half-life (s): what a scanner set to this nuclide decay-corrects with.
    half_life_source : str
    positron_fraction : float
        Positrons per decay: what a scanner set to this nuclide divides its positron rate by.
    positron_fraction_source : str
    code_value, code_meaning : str
        RadionuclideCodeSequence (0054,0300) CodeValue (SNOMED-RT, scheme "SRT") and
        CodeMeaning of DICOM CID 4020.
    snomed_ct : str
        The SNOMED CT code value of the same nuclide (scheme "SCT").
    note : str
        A caveat reported when the table's positron fraction is used.
    """

    name: str
    half_life_s: float
    half_life_source: str
    positron_fraction: float
    positron_fraction_source: str
    code_value: str
    code_meaning: str
    snomed_ct: str
    note: str = ""


#: The nuclides a PET scanner is set to when imaging Y-90, by name.
NUCLIDES: Mapping[str, Nuclide] = MappingProxyType({
    "Y-90": Nuclide(
        "Y-90", C.Y90_HALF_LIFE_S, "ICRP-107 (64.10 h)",
        C.Y90_POSITRON_YIELD, "Selwyn et al. 2007, doi:10.1016/j.apradiso.2006.08.009 (31.86e-6)",
        "C-162A7", "^90^Yttrium", "14691008",
    ),
    "F-18": Nuclide(
        "F-18", 109.77 * 60.0, "ICRP-107 (109.77 min)",
        0.9673, "ICRP-107 (beta+ 96.73 %)",
        "C-111A1", "^18^Fluorine", "77004003",
    ),
    "Ga-68": Nuclide(
        "Ga-68", 67.71 * 60.0, "ICRP-107 (67.71 min)",
        0.8891, "ICRP-107 (beta+ 88.91 %)",
        "C-131A3", "^68^Gallium", "35337001",
    ),
    "Ge-68": Nuclide(
        "Ge-68", 270.95 * 86400.0, "ICRP-107 (270.95 d)",
        0.8891, "Ga-68's beta+ 88.91 % (ICRP-107)",
        "C-128A2", "^68^Germanium", "53315004",
        note="Ge-68 settings use the positron fraction of its daughter Ga-68 (secular equilibrium "
        "in the calibration source) with Ge-68's half-life",
    ),
})

#: Y-90 itself.
Y90: Nuclide = NUCLIDES["Y-90"]


@dataclass(frozen=True)
class SpectNuclide:
    """A single-photon nuclide of planning scans (no positron: never a PET scanner's setting).

    Attributes
    ----------
    name : str
        ``"Tc-99m"``.
    half_life_s : float
        Physical half-life (s).
    half_life_source : str
    photopeak_kev : float
        Energy of the gamma ray a camera images (keV).
    photopeak_yield : float
        Photons of that energy per decay.
    photopeak_source : str
    code_value, code_meaning : str
        RadionuclideCodeSequence (0054,0300) CodeValue (SNOMED-RT, scheme "SRT") and
        CodeMeaning of DICOM CID 18.
    snomed_ct : str
        The SNOMED CT code value of the same nuclide (scheme "SCT").
    """

    name: str
    half_life_s: float
    half_life_source: str
    photopeak_kev: float
    photopeak_yield: float
    photopeak_source: str
    code_value: str
    code_meaning: str
    snomed_ct: str


#: The single-photon nuclides of planning SPECT, by name. Not PET settings: see the module notes.
#: Tc-99m's half-life is ICRP-107's 6.015 h, like every half-life here (DDEP and NNDC give 6.0067 h,
#: 0.14 % shorter: the decay over a 1 h injection-to-scan delay changes by 1.6e-4).
SPECT_NUCLIDES: Mapping[str, SpectNuclide] = MappingProxyType({
    "Tc-99m": SpectNuclide(
        "Tc-99m", 6.015 * 3600.0, "ICRP-107 (6.015 h)",
        140.511, 0.8906, "ICRP-107 (gamma 140.511 keV, 89.06 %)",
        "C-163A8", "^99m^Technetium", "72454006",
    ),
})

#: Tc-99m, the nuclide of the MAA SPECT.
TC99M: SpectNuclide = SPECT_NUCLIDES["Tc-99m"]

#: Code values that name a nuclide voxeldose holds no data for (recognised, to refuse clearly).
_OTHER_CODES: Mapping[str, str] = MappingProxyType({"C-162A3": "Y-86", "10738001": "Y-86"})

#: RadionuclideCodeSequence code value (SNOMED-RT or SNOMED CT) -> nuclide name: the PET nuclides,
#: the SPECT nuclides and the recognised others. A name here need not be a PET setting: check
#: :data:`NUCLIDES` for that.
RADIONUCLIDE_CODES: Mapping[str, str] = MappingProxyType({
    **{n.code_value: n.name for n in NUCLIDES.values()},
    **{n.snomed_ct: n.name for n in NUCLIDES.values()},
    **{n.code_value: n.name for n in SPECT_NUCLIDES.values()},
    **{n.snomed_ct: n.name for n in SPECT_NUCLIDES.values()},
    **_OTHER_CODES,
})


def nuclide_of_code(code: str | None) -> str | None:
    """The nuclide a RadionuclideCodeSequence code value names (CID 4020, CID 18), or None.

    Example
    -------
    >>> nuclide_of_code("C-162A7"), nuclide_of_code("C-163A8"), nuclide_of_code("72454006")
    ('Y-90', 'Tc-99m', 'Tc-99m')
    """
    return RADIONUCLIDE_CODES.get((code or "").strip())


# ---------------------------------------------------------------------------- names

_ELEMENTS = {
    "h": "H", "hydrogen": "H", "c": "C", "carbon": "C", "n": "N", "nitrogen": "N", "o": "O",
    "oxygen": "O", "f": "F", "fluorine": "F", "na": "Na", "sodium": "Na", "k": "K",
    "potassium": "K", "sc": "Sc", "scandium": "Sc", "ti": "Ti", "titanium": "Ti", "mn": "Mn",
    "manganese": "Mn", "fe": "Fe", "iron": "Fe", "cu": "Cu", "copper": "Cu", "zn": "Zn",
    "zinc": "Zn", "ga": "Ga", "gallium": "Ga", "ge": "Ge", "germanium": "Ge", "as": "As",
    "arsenic": "As", "se": "Se", "selenium": "Se", "br": "Br", "bromine": "Br", "rb": "Rb",
    "rubidium": "Rb", "y": "Y", "yttrium": "Y", "zr": "Zr", "zirconium": "Zr", "nb": "Nb",
    "niobium": "Nb", "tc": "Tc", "technetium": "Tc", "in": "In", "indium": "In", "i": "I",
    "iodine": "I", "tb": "Tb", "terbium": "Tb", "ho": "Ho", "holmium": "Ho", "lu": "Lu",
    "lutetium": "Lu", "re": "Re", "rhenium": "Re",
}
_MASS_FIRST = re.compile(r"^\^?(\d{1,3})(m?)\^?\s*-?\s*([A-Za-z]+)$")
_ELEMENT_FIRST = re.compile(r"^([A-Za-z]+)\s*-?\s*\^?(\d{1,3})(m?)\^?$")


def normalise_nuclide(text: object) -> str | None:
    """The nuclide named by ``text`` as ``"Y-90"``, or None when it names none.

    Accepts the usual spellings: ``"Y-90"``, ``"Y90"``, ``"90Y"``, ``"yttrium-90"`` and the DICOM
    code meaning ``"^90^Yttrium"``; metastable states keep their ``m`` (``"Tc-99m"``).

    Example
    -------
    >>> normalise_nuclide("^90^Yttrium"), normalise_nuclide("18F"), normalise_nuclide("HU")
    ('Y-90', 'F-18', None)
    """
    if not isinstance(text, str):
        return None
    s = text.strip().replace(" ", "")
    m = _MASS_FIRST.match(s)
    if m:
        mass, meta, element = m.groups()
    else:
        m = _ELEMENT_FIRST.match(s)
        if not m:
            return None
        element, mass, meta = m.groups()
    symbol = _ELEMENTS.get(element.lower())
    if symbol is None:
        return None
    return f"{symbol}-{int(mass)}{meta.lower()}"
