"""The 1.230 edge of the 2023 cut-offs: both conventions selectable (issue 15)."""

from tbscore.clinical.risk import SHEVROJA_2023, get_threshold_set


def test_1230_edge_conventions_differ_only_at_the_edge():
    vendor = get_threshold_set("shevroja_2023_vendor_edge")
    assert SHEVROJA_2023.categorize(1.230).code == "intermediate"
    assert vendor.categorize(1.230).code == "degraded"
    assert vendor.categorize(1.2304).code == "degraded"  # reported as 1.230
    for tbs in (1.0, 1.229, 1.231, 1.27, 1.310, 1.311, 1.5):
        assert vendor.categorize(tbs).code == SHEVROJA_2023.categorize(tbs).code, tbs
    assert vendor.describe().endswith("degraded: TBS <= 1.230")
