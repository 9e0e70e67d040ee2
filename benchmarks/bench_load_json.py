"""CPU cost of loading a scan and of writing its result (issue 14, h14q).

Run: ``python benchmarks/bench_load_json.py`` (and, for a before/after pair,
``PYTHONPATH=/tmp/old/src python benchmarks/bench_load_json.py`` from the old tree,
alternated; compare within one pair only).

Per bundled sample, CPU time (``time.process_time``), the smallest mean over 20 blocks
of 50 calls after one warm-up call:

* ``load_dicom``: :func:`tbscore.io.load.load_dicom` of the file;
* ``_load, fresh data sets``: the loader's work after pydicom's parse (checks, decode,
  pixel hash, gray levels, header values), on 200 data sets read beforehand, each used
  once per block (raw values, as after a read);
* ``to_json``: :meth:`~tbscore.core.result.TBSResult.to_json` of the sample's result;
* ``csv_row``: :meth:`~tbscore.core.result.TBSResult.csv_row` (one batch row);
* peer: ``json.dumps(to_dict())`` without indent (the C encoder alone, no indentation),
  the floor of what any exact writer of the same text pays for the numbers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import tbscore
from _timing import cpu_min
from tbscore.io.load import _load, load_dicom
from tbscore.io.sniff import read_dicom_bytes

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"


def _fresh_load(path: Path, n: int = 200, blocks: int = 15) -> float:
    """Smallest mean CPU seconds of ``_load`` over ``n`` data sets read beforehand."""
    datasets = [read_dicom_bytes(path)[0] for _ in range(n)]
    best = float("inf")
    for _ in range(blocks):
        t0 = time.process_time()
        for ds in datasets:
            _load(ds, str(path), None, None, False, None)
        best = min(best, (time.process_time() - t0) / n)
    return best


def main() -> None:
    paths = sorted(SAMPLES.glob("*.dcm"))
    print(
        f"# tbscore {tbscore.__version__} ({Path(tbscore.__file__).parent}); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rows: dict[str, list[float]] = {}
    for p in paths:
        res = tbscore.calc(p, p.with_name(p.stem + ".roi.json"))
        for name, fn in (
            ("load_dicom", lambda p=p: load_dicom(p)),
            ("to_json", res.to_json),
            ("peer: json.dumps(to_dict()), no indent", lambda r=res: json.dumps(r.to_dict())),
            ("csv_row", res.csv_row),
        ):
            rows.setdefault(name, []).append(cpu_min(fn, 50, 20))
        rows.setdefault("_load, fresh data sets", []).append(_fresh_load(p))
    print(f"{'CPU us per call':<40}" + "".join(f"{p.stem[:16]:>18}" for p in paths))
    for name, values in rows.items():
        mean = 1e6 * sum(values) / len(values)
        print(f"{name:<40}" + "".join(f"{1e6 * v:18.1f}" for v in values) + f"   mean {mean:.1f}")


if __name__ == "__main__":
    main()
