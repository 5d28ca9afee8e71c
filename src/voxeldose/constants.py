"""Physical constants for Y-90 dosimetry, each with its source.

All values are plain floats in the units named in the constant.

References
----------
.. [ICRP107] ICRP Publication 107, "Nuclear decay data for dosimetric calculations",
   Ann. ICRP 38(3), 2008. doi:10.1016/j.icrp.2008.10.004
.. [Lanconelli2012] Lanconelli N et al., "A free database of radionuclide voxel S values for the
   dosimetry of nonuniform activity distributions", Phys Med Biol 57:517-533, 2012.
   doi:10.1088/0031-9155/57/2/517
.. [Selwyn2007] Selwyn RG et al., "A new internal pair production branching ratio of 90Y: the
   development of a non-destructive assay for 90Y and 90Sr", Appl Radiat Isot 65:318-327, 2007.
   doi:10.1016/j.apradiso.2006.08.009
.. [Dezarn2011] Dezarn WA et al., "Recommendations of the American Association of Physicists in
   Medicine on dosimetry, imaging, and quality assurance procedures for 90Y microsphere
   brachytherapy in the treatment of hepatic malignancies", Med Phys 38:4824-4845, 2011.
   doi:10.1118/1.3608909
.. [CODATA2018] Tiesinga E et al., CODATA 2018 recommended values; the joule per electron-volt
   is exact in the 2019 SI.
"""

from __future__ import annotations

import math

#: Y-90 physical half-life in hours [ICRP107].
Y90_HALF_LIFE_H: float = 64.10

#: Y-90 physical half-life in seconds.
Y90_HALF_LIFE_S: float = Y90_HALF_LIFE_H * 3600.0

#: Y-90 decay constant in 1/s.
Y90_DECAY_CONSTANT_PER_S: float = math.log(2.0) / Y90_HALF_LIFE_S

#: Mean lifetime T1/2 / ln 2 in s. For a permanent implant (no biological washout), the number
#: of decays from administration to infinity is A0 [Bq] times this value.
Y90_MEAN_LIFE_S: float = Y90_HALF_LIFE_S / math.log(2.0)

#: Mean energy emitted per decay (beta, IE, Auger, X, gamma) in MeV [ICRP107]; the beta- branch
#: alone gives 0.932991 MeV x 0.999885 per decay.
Y90_MEAN_ENERGY_MEV: float = 0.9331

#: Internal-pair-production positron yield per decay, used to read Y-90 PET [Selwyn2007].
Y90_POSITRON_YIELD: float = 31.86e-6

#: Clinical MIRD constant in Gy kg / GBq for the mean dose of a permanent Y-90 implant, as used in
#: the TheraSphere/SIR-Spheres planning formulas [Dezarn2011]. It is 0.2 % below the value the
#: ICRP-107 constants above give (see :data:`Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ`); the engine
#: uses the ICRP-107 values for voxel dose and this constant only for the clinical models.
MIRD_Y90_GY_KG_PER_GBQ: float = 49.67

#: Joules per MeV (exact, 2019 SI) [CODATA2018].
J_PER_MEV: float = 1.602176634e-13

#: Energy emitted per unit administered activity over the whole decay, divided by mass:
#: E_mean x T1/2/ln2, in Gy kg / GBq (about 49.77) from the ICRP-107 constants.
Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ: float = Y90_MEAN_ENERGY_MEV * J_PER_MEV * Y90_MEAN_LIFE_S * 1e9

#: Density of soft tissue in g/cm^3: the medium of the Lanconelli 2012 soft-tissue kernels
#: (ICRP soft tissue; implied by their sums) [Lanconelli2012].
SOFT_TISSUE_DENSITY_G_PER_CM3: float = 1.04

#: Density of compact bone in g/cm^3 (ICRU compact bone), the medium of the Lanconelli 2012
#: compact-bone kernels [Lanconelli2012].
COMPACT_BONE_DENSITY_G_PER_CM3: float = 1.85

#: Kilograms per mm^3 for a density of 1 g/cm^3.
KG_PER_MM3_PER_G_PER_CM3: float = 1e-6
