#!/bin/sh
# Regenerate docs/images/signed_report_pN.png (one per page): a signed, then amended, 77092 report
# of the bundled phantom (raw index, so the category is shown muted). Needs poppler-utils.
set -e
d=$(mktemp -d)
tbscore calc sample_dicom/phantom_a_square.dcm --roi sample_dicom/phantom_a_square.roi.json --json > "$d/r.json"
python3 - "$d" <<'PY'
import json, sys
d = json.load(open(f"{sys.argv[1]}/r.json"))
d["l1_l4"] += 0.08  # an invented prior for the comparison block
d["metadata"]["study_date"] = "20240115"
json.dump(d, open(f"{sys.argv[1]}/prior.json", "w"))
PY
common="--image sample_dicom/phantom_a_square.dcm --roi sample_dicom/phantom_a_square.roi.json --tz Europe/Zurich"
tbscore sign "$d/r.json" --physician "Jane Roe, MD" --organisation "Clinic X" \
  --impression "Trabecular texture index in the degraded range on the raw, uncalibrated scale; see caveats." \
  --recommendation "Correlate with BMD and clinical risk factors." --age 65 --sex F \
  --frax-mof 12 --frax-hip 3 --bmd 0.912 --t-score -1.4 --lsc 0.04 --prior "$d/prior.json" \
  -o "$d/signed.pdf" $common
tbscore sign "$d/r.json" --physician "John Doe, MD" \
  --addendum "Prior outside report received; no change to the impression." -o "$d/amended.pdf" $common
n=$(pdfinfo "$d/amended.pdf" | awk "/^Pages:/{print \$2}"); echo "pages: $n"
for i in $(seq 1 "$n"); do
  pdftoppm -r 70 -png -singlefile -f $i -l $i "$d/amended.pdf" docs/images/signed_report_p$i
done
