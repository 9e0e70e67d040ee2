"""Golden outputs on ``sample_dicom/``: produce, normalise, and (``--update``) store them.

``tests/test_golden.py`` compares what the current tree produces with the files in
``tests/golden/files/``; those files were made from the commit before the layered
package (``b8b1742``) with::

    git worktree add --detach /tmp/tbscore-b8b1742 b8b1742
    PYTHONPATH=/tmp/tbscore-b8b1742/src python tests/golden/make_golden.py --update
    git worktree remove /tmp/tbscore-b8b1742

so the test proves that the move changed no output. After a change that alters outputs
on purpose (merged branches: escaped CSV cells, relative paths, new fields), regenerate
from the current tree with ``python tests/golden/make_golden.py --update`` and review
the diff of ``tests/golden/files/``.

Outputs (in-process API calls, no sub-processes):

* ``calc_<name>.json``: ``calc(file, roi=side-car).to_dict()`` for each sample;
* ``batch.csv``: ``run_batch(sample_dicom/, out.csv)`` (side-cars found by the batch
  rule);
* ``report.json`` / ``report.html``: ``build_report`` of the first sample with an
  interpretation (age 65, sex F, BMI 24), image and ROIs;
* ``sr.json``: ``read_sr`` of the SR written for the first sample;
* ``manifest.json``: the export manifest of ``sample_dicom/``.

Normalisation (:func:`normalise_text`), applied to every output before comparing, and
the only thing that is ignored:

* date-times (``2026-12-01T22:55:00...``, ``2026-12-01 22:55 UTC``) -> ``<TIME>``
  (plain dates such as the study date are kept);
* ``elapsed_s`` values -> ``<ELAPSED>``;
* the tbscore version string -> ``<VERSION>``;
* the temporary output folder and the repository root -> ``<TMP>`` and ``<ROOT>``;
* UIDs generated at run time (``2.25.<digits>`` and pydicom ``1.2.826.0.1.3680043.8.498.``
  roots) -> ``<UID>``; UIDs of the sample files are kept;
* in the export manifest only, the ``sha256`` / ``file_sha256`` of the written files
  (they contain generated UIDs) -> ``<SHA256>``; pixel digests, and input-file digests
  everywhere else, are kept;
* random mapping keys (``pseudonym``-style hex tokens of 16+ digits) -> ``<TOKEN>``;
* decimal numbers written with 10 or more decimals are rounded to 9 significant digits
  (``<F:...>``): the last bits of a float sum or FFT depend on the CPU's SIMD width and
  the BLAS/FFT build, so full-precision digits differ between machines while any real
  change of a value (1e-9 relative or more) still shows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLES = ROOT / "sample_dicom"
FILES = HERE / "files"

_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d| UTC)?")
_GEN_UID = re.compile(r"\b(?:2\.25\.\d+|1\.2\.826\.0\.1\.3680043\.8\.498\.[\d.]+)\b")
_ELAPSED = re.compile(r'("elapsed_s"\s*:\s*)[0-9.eE+-]+')
_FILE_DIGEST = re.compile(r'("(?:sha256|file_sha256)"\s*:\s*)"[0-9a-f]{64}"')
_TOKEN = re.compile(r"\b[0-9a-f]{16,40}\b")
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{10,}(?:[eE][+-]?\d+)?(?![\w.])")


def _round_float(match: re.Match[str]) -> str:
    return f"<F:{float(match.group(0)):.9g}>"


def normalise_text(text: str, *, tmp: str, version: str, new_files: bool = False) -> str:
    """Replace the run-dependent parts of an output (see the module docstring).

    ``new_files``: the output lists digests of files written with generated UIDs (the
    export manifest), which are replaced too.
    """
    text = text.replace(tmp, "<TMP>").replace(str(ROOT), "<ROOT>")
    text = _ELAPSED.sub(r"\1<ELAPSED>", text)
    text = _TIME.sub("<TIME>", text)
    text = _GEN_UID.sub("<UID>", text)
    if new_files:
        text = _FILE_DIGEST.sub(r'\1"<SHA256>"', text)
    text = _LONG_FLOAT.sub(_round_float, text)
    text = _TOKEN.sub("<TOKEN>", text)
    return text.replace(f"tbscore {version}", "tbscore <VERSION>").replace(
        f'"{version}"', '"<VERSION>"'
    )


def _csv_elapsed(text: str) -> str:
    """Blank the ``elapsed_s`` column of a CSV (a float that changes every run)."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "elapsed_s" not in rows[0]:
        return text
    k = rows[0].index("elapsed_s")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(rows[0])
    for r in rows[1:]:
        r[k] = "<ELAPSED>" if r[k] else r[k]
        w.writerow(r)
    return out.getvalue()


def _api():
    """The functions used, from the layered tree or from the pre-move tree."""
    import tbscore
    from tbscore import calc
    from tbscore.batch import run_batch

    try:  # layered package
        from tbscore.clinical.interpret import interpret_result
        from tbscore.core.roi import read_rois
        from tbscore.io.sr import read_sr, write_sr
        from tbscore.render.report import build_report, render_html
    except ImportError:  # b8b1742
        from tbscore.report import build_report, interpret_result, render_html
        from tbscore.roi import read_rois
        from tbscore.sr import read_sr, write_sr
    from tbscore.export import export_package
    from tbscore.io import load_dicom

    return dict(
        version=tbscore.__version__,
        calc=calc,
        run_batch=run_batch,
        interpret_result=interpret_result,
        read_rois=read_rois,
        export_package=export_package,
        read_sr=read_sr,
        write_sr=write_sr,
        build_report=build_report,
        render_html=render_html,
        load_dicom=load_dicom,
    )


def produce(tmp: Path) -> dict[str, str]:
    """Every golden output, normalised: file name -> text."""
    api = _api()
    out: dict[str, str] = {}
    dcms = sorted(SAMPLES.glob("*.dcm"))

    def dump(obj: object) -> str:
        return json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"

    for dcm in dcms:
        roi = dcm.with_name(dcm.stem + ".roi.json")
        out[f"calc_{dcm.stem}.json"] = dump(api["calc"](dcm, roi=roi).to_dict())
    api["run_batch"]([SAMPLES], tmp / "batch.csv", progress=False, fsync=False)
    out["batch.csv"] = _csv_elapsed((tmp / "batch.csv").read_text(encoding="utf-8"))
    first = dcms[0]
    roi_path = first.with_name(first.stem + ".roi.json")
    image = api["load_dicom"](first)
    result = api["calc"](image, roi=roi_path)
    rois = api["read_rois"](roi_path, image.shape, image.spacing_mm)
    interp = api["interpret_result"](result, age=65, sex="F", bmi=24.0)
    report = api["build_report"](result, interp, image=image, rois=rois)
    out["report.json"] = dump(report.to_dict())
    out["report.html"] = api["render_html"](report)
    api["write_sr"](result, first, tmp / "sr.dcm")
    out["sr.json"] = dump(api["read_sr"](tmp / "sr.dcm"))
    pkg = api["export_package"]([SAMPLES], tmp / "pkg", mapping_path=tmp / "mapping.json")
    out["manifest.json"] = dump(pkg.manifest)
    return {
        name: normalise_text(
            text, tmp=str(tmp), version=api["version"], new_files=name == "manifest.json"
        )
        for name, text in out.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Make (or check) the golden outputs.")
    ap.add_argument("--update", action="store_true", help="write tests/golden/files/")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tbscore-golden-") as tmp:
        outputs = produce(Path(tmp))
    if args.update:
        FILES.mkdir(exist_ok=True)
        for old in FILES.iterdir():
            old.unlink()
        for name, text in outputs.items():
            (FILES / name).write_text(text, encoding="utf-8")
        import tbscore

        print(f"wrote {len(outputs)} files to {FILES} from {Path(tbscore.__file__).parent}")
        return 0
    bad = [n for n, t in outputs.items() if (FILES / n).read_text(encoding="utf-8") != t]
    print("differ: " + ", ".join(bad) if bad else "all golden files match")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
