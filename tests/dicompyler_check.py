"""Mean dose per ROI by dicompyler-core, for tests/test_io_write_outputs.py.

Runs inside its own virtualenv (dicompyler-core 0.5.6 needs pydicom 2.x):
    python dicompyler_check.py RTDOSE RTSTRUCT   ->   {"roi name": mean dose in Gy, ...} on stdout
"""

import json
import sys

from dicompylercore import dicomparser, dvhcalc


def main(rtdose_path, rtstruct_path):
    structures = dicomparser.DicomParser(rtstruct_path).GetStructures()
    out = {}
    for number, structure in structures.items():
        dvh = dvhcalc.get_dvh(rtstruct_path, rtdose_path, number)
        out[structure["name"]] = float(dvh.mean)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
