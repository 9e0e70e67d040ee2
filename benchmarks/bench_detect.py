"""Automatic L1-L4 detection: run time per image, and accuracy on phantoms.

Run: ``python benchmarks/bench_detect.py`` (timing table) and
``python benchmarks/bench_detect.py --accuracy 10`` (also the accuracy table of
docs/detection.md, 10 phantoms per condition).

* **Timing.** CPU time (``time.process_time``) of :func:`tbscore.core.detect.detect` on
  :func:`tbscore.sim.phantom.synthetic_spine` images of typical DXA sizes and on the four
  bundled ``sample_dicom`` images; median of ``--repeat`` blocks of 3 calls after one
  warm-up, one thread, this machine. ``--peer SRC`` times another source tree's
  detector (e.g. the commit before a speed change) in a child process of the same run
  and prints the speed-up beside it, and whether both returned the same ROIs (a digest
  of labels, polygon vertices, confidences, exclusions and warnings).
* **Accuracy.** Per condition (tilt, curvature, soft tissue, noise, non-square pixels,
  MONOCHROME1 / 8-bit / 16-bit DICOM round trips), ``N`` phantoms with seeds
  ``--seed .. --seed + N - 1`` and Hurst exponents cycling through 0.3-0.7:

  - IoU between the detected body outline (``roi_inset_mm=0``) and the true body
    (:func:`tbscore.sim.phantom.vertebra_mask`), per vertebra;
  - |TBS(detected ROI) - TBS(true ROI)| with the default ROI (the outline shrunk by
    ``DEFAULT_ROI_INSET_MM``) against the true body shrunk by the same distance, per
    vertebra and for L1-L4 (default settings);
  - the same difference for whole bodies (inset 0 on both sides), which shows why the
    default ROI stays inside the cortical rim;
  - label errors (a detected L1-L4 whose best-overlapping true body has another label)
    and refusals (DetectionError).

* **Stress set** (``--stress N``): ``N`` phantoms with every option drawn at random
  (tilt +-15 deg, curvature 0 or +-15 mm, bone 250-500 over soft tissue 100-500,
  gradients up to 30 % / 50 % per 100 mm, lumps up to 8 %, noise sd 1 / 10 / 30,
  H 0.25-0.75, five pixel spacings, fields 200-300 x 150-220 mm): how often the
  detector is right, wrong with a warning, wrong without one, or refuses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tbscore
from tbscore.core.detect import DEFAULT_ROI_INSET_MM, detect
from tbscore.core.roi import VertebraROI, VertebraROIs
from tbscore.errors import DetectionError
from tbscore.io.load import load_dicom
from tbscore.io.write import write_secondary_capture
from tbscore.sim.phantom import LUMBAR_LABELS, synthetic_spine, vertebra_mask

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"

SIZES = (
    ("200 x 160 px, 1.0 mm", (200, 160), (1.0, 1.0)),
    ("190 x 250 px, 1.05 x 0.6 mm (GE Lunar-like)", (190, 250), (1.05, 0.6)),
    ("400 x 300 px, 0.5 mm (Hologic-like)", (400, 300), (0.5, 0.5)),
    ("512 x 256 px, 1.0 mm (tall field)", (512, 256), (1.0, 1.0)),
    ("800 x 600 px, 0.25 mm", (800, 600), (0.25, 0.25)),
    ("1200 x 900 px, 0.2 mm", (1200, 900), (0.2, 0.2)),
)

#: Accuracy conditions: name -> (synthetic_spine keywords, DICOM round trip or None).
CONDITIONS: dict[str, tuple[dict, dict | None]] = {
    "square 1 mm": ({}, None),
    "tilt +15 deg": ({"tilt_deg": 15.0}, None),
    "tilt -15 deg": ({"tilt_deg": -15.0}, None),
    "curvature +15 mm": ({"curvature_mm": 15.0}, None),
    "curvature -15 mm, tilt 5 deg": ({"curvature_mm": -15.0, "tilt_deg": 5.0}, None),
    "thick soft tissue + gradient": (
        {"soft_tissue": 450.0, "soft_tissue_gradient": (0.15, 0.35), "soft_tissue_variation": 0.08},
        None,
    ),
    "noise sd 30": ({"noise_sd": 30.0}, None),
    "non-square 1.05 x 0.6 mm": ({"spacing_mm": (1.05, 0.6), "shape": (240, 330)}, None),
    "MONOCHROME1 8-bit DICOM, 0.5 mm": (
        {"spacing_mm": (0.5, 0.5), "shape": (480, 400)},
        {"photometric": "MONOCHROME1", "bits": 8},
    ),
    "MONOCHROME2 16-bit DICOM, 1.05 x 0.6 mm, tilt -10": (
        {"spacing_mm": (1.05, 0.6), "shape": (240, 330), "tilt_deg": -10.0},
        {"photometric": "MONOCHROME2", "bits": 16},
    ),
    "uint8 array, tilt 8, curvature 10": (
        {"tilt_deg": 8.0, "curvature_mm": 10.0, "dtype": "uint8"},
        None,
    ),
}


def make_case(kw: dict, io: dict | None, hurst: float, seed: int, tmp: Path):
    """Phantom image (as detect will see it), its spacing and the ground truth."""
    kw = dict(kw)
    dtype = kw.pop("dtype", None)
    kw.setdefault("shape", (260, 200))
    image, truth = synthetic_spine(hurst, rng=seed, **kw)
    spacing = tuple(truth["spacing_mm"])
    if io is not None:
        path = write_secondary_capture(tmp / f"case{seed}.dcm", image, spacing, **io)
        dxa = load_dicom(path)
        return dxa.pixels, dxa.spacing_mm, truth
    if dtype == "uint8":
        lo, hi = image.min(), image.max()
        image = np.round((image - lo) / (hi - lo) * 255).astype(np.uint8)
    return image, spacing, truth


def truth_rois(truth: dict, inset_mm: float) -> VertebraROIs:
    """The true L1-L4 bodies, shrunk by ``inset_mm``, as ROIs."""
    shape = tuple(truth["shape"])
    rois = tuple(
        VertebraROI(lab, vertebra_mask(truth, lab, inset_mm=inset_mm)) for lab in LUMBAR_LABELS
    )
    return VertebraROIs(rois, shape, "truth")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1))


def evaluate(image, spacing, truth) -> dict:
    """IoU, TBS differences and label check of one phantom (raises DetectionError)."""
    outline = detect(image, spacing, roi_inset_mm=0.0)
    rois = detect(image, spacing)
    true_body = {lab: vertebra_mask(truth, lab) for lab in LUMBAR_LABELS}
    ious = [iou(outline[lab].mask, true_body[lab]) for lab in LUMBAR_LABELS]
    label_errors = sum(
        max(LUMBAR_LABELS, key=lambda t, m=outline[lab].mask: iou(m, true_body[t])) != lab
        for lab in LUMBAR_LABELS
    )
    img = np.asarray(image, dtype=float)
    det = tbscore.calc(img, rois, spacing=spacing)
    ref = tbscore.calc(img, truth_rois(truth, DEFAULT_ROI_INSET_MM), spacing=spacing)
    d_vert = [abs(a.value - b.value) for a, b in zip(det.vertebrae, ref.vertebrae, strict=True)]
    whole_det = tbscore.calc(img, outline, spacing=spacing)
    whole_ref = tbscore.calc(img, truth_rois(truth, 0.0), spacing=spacing)
    return {
        "iou": ious,
        "d_vert": d_vert,
        "d_l14": abs(det.l1_l4 - ref.l1_l4),
        "d_whole": abs(whole_det.l1_l4 - whole_ref.l1_l4),
        "label_errors": label_errors,
        "confidence": rois.confidence,
    }


def accuracy_table(n: int, seed0: int) -> None:
    hursts = (0.3, 0.4, 0.5, 0.6, 0.7)
    print(
        f"\n## Accuracy: {n} phantoms per condition, seeds {seed0}..{seed0 + n - 1}, "
        f"ROI inset {DEFAULT_ROI_INSET_MM} mm\n"
    )
    print(
        "| condition | mean IoU | min IoU | mean / max abs dTBS per vertebra | "
        "mean / max abs dTBS L1-L4 | whole-body abs dTBS L1-L4 (mean) | label errors | "
        "refused | min confidence |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    every = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kw, io) in CONDITIONS.items():
            rows, refused = [], 0
            for k in range(n):
                seed = seed0 + k
                image, spacing, truth = make_case(kw, io, hursts[k % len(hursts)], seed, Path(tmp))
                try:
                    rows.append(evaluate(image, spacing, truth))
                except DetectionError:
                    refused += 1
            every += rows
            ious = np.array([r["iou"] for r in rows])
            dv = np.array([r["d_vert"] for r in rows])
            dl = np.array([r["d_l14"] for r in rows])
            dw = np.array([r["d_whole"] for r in rows])
            print(
                f"| {name} | {ious.mean():.3f} | {ious.min():.3f} | {dv.mean():.4f} / "
                f"{dv.max():.4f} | {dl.mean():.4f} / {dl.max():.4f} | {dw.mean():.3f} | "
                f"{sum(r['label_errors'] for r in rows)} | {refused} | "
                f"{min(r['confidence'] for r in rows):.2f} |"
            )
    ious = np.array([r["iou"] for r in every])
    dv = np.array([r["d_vert"] for r in every])
    dl = np.array([r["d_l14"] for r in every])
    print(
        f"\nall {len(every)} phantoms: mean IoU {ious.mean():.3f} (min {ious.min():.3f}); "
        f"abs dTBS per vertebra mean {dv.mean():.4f}, max {dv.max():.4f}; "
        f"L1-L4 mean {dl.mean():.4f}, max {dl.max():.4f}"
    )


def stress_table(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    spacings = ((1.0, 1.0), (1.05, 0.6), (0.5, 0.5), (0.8, 0.8), (0.6, 1.05))
    stats = {"ok": 0, "vertebra IoU < 0.85": 0, "label error": 0, "refused": 0}
    flagged = {k: 0 for k in stats}
    doubted = {k: 0 for k in stats}
    noted = {k: 0 for k in stats}
    ious = []
    for _ in range(n):
        sp = spacings[rng.integers(len(spacings))]
        fov = (rng.uniform(200, 300), rng.uniform(150, 220))
        kw = {
            "tilt_deg": rng.uniform(-15, 15),
            "curvature_mm": rng.choice([0.0, rng.uniform(-15, 15)]),
            "noise_sd": float(rng.choice([1.0, 10.0, 30.0])),
            "soft_tissue": rng.uniform(100, 500),
            "bone": rng.uniform(250, 500),
            "soft_tissue_gradient": (rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5)),
            "soft_tissue_variation": rng.uniform(0, 0.08),
            "spacing_mm": sp,
            "shape": (int(fov[0] / sp[0]), int(fov[1] / sp[1])),
        }
        hurst = rng.uniform(0.25, 0.75)
        image, truth = synthetic_spine(hurst, rng=int(rng.integers(2**31)), **kw)
        try:
            outline = detect(image, sp, roi_inset_mm=0.0)
        except DetectionError:
            stats["refused"] += 1
            continue
        true_body = {lab: vertebra_mask(truth, lab) for lab in truth["vertebrae"]}
        v = [iou(outline[lab].mask, true_body[lab]) for lab in LUMBAR_LABELS]
        ious += v
        # matched against every body in the field (T11 ... L5), so an "L1" on T12 counts
        wrong_label = any(
            max(true_body, key=lambda t, m=outline[lab].mask: iou(m, true_body[t])) != lab
            for lab in LUMBAR_LABELS
        )
        kind = "label error" if wrong_label else "vertebra IoU < 0.85" if min(v) < 0.85 else "ok"
        stats[kind] += 1
        low = [r.confidence for r in outline if r.confidence < 0.6]
        flagged[kind] += bool(outline.warnings or low)
        doubted[kind] += any(
            w.startswith(("labels uncertain", "labels moved")) for w in outline.warnings
        )
        noted[kind] += any(w.startswith("no ribs seen") for w in outline.warnings)
    print(f"\n## Stress set: {n} random phantoms (seed {seed})\n")
    print(
        "| outcome | images | of which with a warning / low-confidence vertebra | "
        "of which a label cross-check disagreed | of which the no-ribs note |"
    )
    print("|---|---|---|---|---|")
    for k, count in stats.items():
        cells = (flagged[k], doubted[k], noted[k]) if k != "refused" else ("-",) * 3
        print(f"| {k} | {count} | " + " | ".join(str(c) for c in cells) + " |")
    ious = np.array(ious)
    print(
        f"\nvertebrae: mean IoU {ious.mean():.3f}, IoU >= 0.85 for "
        f"{np.mean(ious >= 0.85):.1%} of {ious.size}"
    )


def label_outcome(image, spacing, truth) -> dict:
    """Label check of one :func:`label_stress_case` phantom.

    Each detected L1-L4 outline is matched to the true body (any of T11 ... L6 in the
    field) it overlaps most; the labels are right when all four match their names.
    ``silent`` is a wrong labelling returned with overall confidence >= 0.6 and no
    warning (the target is none).
    """
    try:
        found = detect(image, spacing, roi_inset_mm=0.0)
    except DetectionError as exc:
        return {"outcome": "refused", "reason": str(exc)}
    bodies = {lab: vertebra_mask(truth, lab) for lab in truth["vertebrae"]}
    wrong = []
    for lab in LUMBAR_LABELS:
        m = found[lab].mask
        best = max(bodies, key=lambda t, m=m: iou(m, bodies[t]))
        if best != lab or iou(m, bodies[best]) < 0.3:
            wrong.append(f"{lab}->{best}")
    warned = bool(found.warnings) or found.confidence < 0.6
    outcome = ("wrong" if wrong else "right") + (", warned" if warned else "")
    return {
        "outcome": outcome,
        "wrong": wrong,
        "confidence": found.confidence,
        "warnings": list(found.warnings),
        "silent": bool(wrong) and not warned,
        "moved": any(w.startswith("labels moved") for w in found.warnings),
    }


LABEL_OUTCOMES = ("right", "right, warned", "wrong, warned", "wrong", "refused")


def label_stress_table(n: int, seed: int, verbose: bool = False) -> dict:
    """Outcomes of ``n`` label-stress phantoms, per crop, lumbar count and crest band."""
    from tbscore.sim.phantom import label_stress_case

    rng = np.random.default_rng(seed)
    groups: dict[str, dict[str, int]] = {}
    total = {k: 0 for k in LABEL_OUTCOMES}
    moved = {"right": 0, "wrong": 0}
    for k in range(n):
        case_seed = int(rng.integers(2**31))
        image, sp, truth = label_stress_case(case_seed)
        res = label_outcome(image, sp, truth)
        off = truth["crest_offset_mm"]
        band = "crest -40..-20" if off < -20 else "crest -20..0" if off < 0 else "crest 0..+20"
        keys = (
            f"crop {truth['crop']}",
            f"{truth['lumbar_count']} lumbar",
            band,
        )
        for key in keys:
            groups.setdefault(key, {o: 0 for o in LABEL_OUTCOMES})[res["outcome"]] += 1
        total[res["outcome"]] += 1
        if res.get("moved"):
            moved["wrong" if res["wrong"] else "right"] += 1
        if verbose and res["outcome"] != "right":
            print(f"  case {k} seed {case_seed} {keys}: {res}")
    print(f"\n## Label-safety stress set: {n} phantoms (seed {seed})\n")
    print("| group | images | " + " | ".join(LABEL_OUTCOMES) + " |")
    print("|---|---|" + "---|" * len(LABEL_OUTCOMES))
    for key in sorted(groups):
        g = groups[key]
        print(
            f"| {key} | {sum(g.values())} | " + " | ".join(str(g[o]) for o in LABEL_OUTCOMES) + " |"
        )
    print(f"| **all** | {n} | " + " | ".join(str(total[o]) for o in LABEL_OUTCOMES) + " |")
    warned = total["right, warned"] + total["wrong, warned"]
    print(
        f"\nwrong labels returned with confidence >= 0.6 and no warning: {total['wrong']}; "
        f"warned {warned / n:.1%} (of which wrong {total['wrong, warned']}); "
        f"refused {total['refused'] / n:.1%}"
    )
    print(
        "labels moved because the rib and L5/sacrum cues agreed: "
        f"{moved['right'] + moved['wrong']} (then right {moved['right']}, wrong {moved['wrong']})"
    )
    return total


def _timing_cases():
    """``(name, image, spacing)``: the synthetic sizes of :data:`SIZES` and the four
    bundled ``sample_dicom`` images (as ``tbscore calc`` reads them)."""
    for name, shape, spacing in SIZES:
        image, _ = synthetic_spine(0.6, shape=shape, spacing_mm=spacing, rng=1)
        yield name, image, spacing
    for path in sorted(SAMPLES.glob("*.dcm")):
        dxa = load_dicom(path)
        yield f"sample_dicom/{path.name}", dxa.pixels, dxa.spacing_mm


def _digest(rois) -> str:
    """SHA-256 of everything detect returned: labels, polygon vertices, confidences,
    exclusions, warnings and the overall confidence (to compare two implementations)."""
    doc = [
        [(r.label, r.polygon.tolist(), r.confidence, r.excluded) for r in rois.rois],
        list(rois.warnings),
        rois.confidence,
    ]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def cpu_times(repeat: int) -> dict[str, tuple[int, float, str]]:
    """``{name: (pixels, CPU ms per detect call, output digest)}``: median over
    ``repeat`` blocks of 3 calls (``time.process_time``), after one warm-up call."""
    out = {}
    for name, image, spacing in _timing_cases():
        digest = _digest(detect(image, spacing))  # warm-up
        samples = []
        for _ in range(repeat):
            t0 = time.process_time()
            for _ in range(3):
                detect(image, spacing)
            samples.append((time.process_time() - t0) / 3)
        out[name] = (int(image.size), 1000 * statistics.median(samples), digest)
    return out


def _peer_times(src: str, repeat: int) -> dict[str, tuple[int, float, str]]:
    """:func:`cpu_times` of another tbscore source tree (``src`` put first on
    ``PYTHONPATH``), in a child process running this script."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_detect as b; "
        "print(json.dumps(b.cpu_times(int(sys.argv[2]))))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(repeat)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return {k: tuple(v) for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


def timing_table(repeat: int, peer: str | None = None) -> None:
    """CPU time per image; with ``peer``, that tree's detector timed in the same run
    (before this one) and the ratio."""
    print(
        f"\n## Detection CPU time per image (median of {repeat} blocks of 3 calls, "
        f"one thread; load average {os.getloadavg()[0]:.2f})\n"
    )
    theirs = _peer_times(peer, repeat) if peer else None
    ours = cpu_times(repeat)
    if theirs is None:
        print("| image | pixels | CPU ms |")
        print("|---|---|---|")
        for name, (px, ms, _) in ours.items():
            print(f"| {name} | {px:,} | {ms:.1f} |")
        return
    print(f"peer: `{peer}`\n")
    print("| image | pixels | peer CPU ms | this CPU ms | speed-up | same output |")
    print("|---|---|---|---|---|---|")
    for name, (px, ms, digest) in ours.items():
        old = theirs[name][1]
        same = "yes" if theirs[name][2] == digest else "**no**"
        print(f"| {name} | {px:,} | {old:.1f} | {ms:.1f} | {old / ms:.2f}x | {same} |")
    samples = [k for k in ours if k.startswith("sample_dicom/")]
    mo = statistics.mean(ours[k][1] for k in samples)
    mt = statistics.mean(theirs[k][1] for k in samples)
    print(f"\nsample_dicom mean: peer {mt:.1f} ms, this {mo:.1f} ms ({mt / mo:.2f}x)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10, help="timed blocks of 3 calls per image")
    ap.add_argument(
        "--peer",
        metavar="SRC",
        help="also time the detector of another tbscore source tree (its src/ folder, e.g. "
        "from `git archive BASE src | tar -x -C /tmp/old`) in the same run, with the ratio",
    )
    ap.add_argument(
        "--accuracy",
        type=int,
        default=0,
        metavar="N",
        help="also print the accuracy table with N phantoms per condition",
    )
    ap.add_argument("--seed", type=int, default=1000, help="first phantom seed (accuracy)")
    ap.add_argument(
        "--stress", type=int, default=0, metavar="N", help="also run N random stress phantoms"
    )
    ap.add_argument(
        "--labels",
        type=int,
        default=0,
        metavar="N",
        help="also run N label-safety stress phantoms (tbscore.sim.phantom.label_stress_case)",
    )
    ap.add_argument("--verbose", action="store_true", help="print every non-right label case")
    ap.add_argument("--no-timing", action="store_true", help="skip the timing table")
    args = ap.parse_args(argv)
    print(
        f"# tbscore.core.detect benchmark - {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    if not args.no_timing:
        timing_table(args.repeat, args.peer)
    if args.labels:
        label_stress_table(args.labels, args.seed, args.verbose)
    if args.accuracy:
        accuracy_table(args.accuracy, args.seed)
    if args.stress:
        stress_table(args.stress, args.seed)


if __name__ == "__main__":
    main()
