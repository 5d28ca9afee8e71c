"""Mean dose per ROI by dicompyler-core, for tests/test_io_results.py.

Runs inside its own virtualenv (dicompyler-core 0.5.6 needs pydicom 2.x), so it imports nothing
from voxeldose:

    python dicompyler_check.py RTDOSE RTSTRUCT   ->   {"roi name": mean dose in Gy or null, ...}

An ROI without a DVH (no contours, or outside the dose grid) gets null.
"""

import json
import math
import sys

from dicompylercore import dicomparser, dvhcalc


def main(rtdose_path, rtstruct_path):
    structures = dicomparser.DicomParser(rtstruct_path).GetStructures()
    out = {}
    for number, structure in structures.items():
        dvh = dvhcalc.get_dvh(rtstruct_path, rtdose_path, number)
        mean = float(dvh.mean) if dvh.volume > 0 else math.nan
        out[structure["name"]] = mean if math.isfinite(mean) else None
    json.dump(out, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
