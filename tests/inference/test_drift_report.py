"""The drift report page, rendered from real evaluations (``inference.drift.evaluate`` on the
shipped diamonds): the prediction in the table with the features, drifted first; axes with
several numbered ticks; category labels whole; p-values readable, the tiniest as < 1e-300."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from inference import drift
from inference.drift_report import p_value, render
from tests.helpers.monitoring import FEATURES, diamonds_with_gaps

NUMBERS = ["carat", "depth", "table", "x", "y", "z"]
LONG_CUT = "Very Good, cut by hand in Antwerp"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    frame = diamonds_with_gaps()
    # One long category among the reference's, as a user's data may hold.
    frame.loc[frame.index % 50 == 0, "cut"] = LONG_CUT
    return frame


@pytest.fixture(scope="module")
def reference(data: pd.DataFrame) -> drift.Reference:
    kinds = {c: drift.NUMBER if c in NUMBERS else drift.CATEGORY for c in FEATURES}
    features = {c: drift.Distribution.of(data[c], k) for c, k in kinds.items()}
    return drift.Reference(
        features, drift.Distribution.of(data["price"], drift.NUMBER), source="diamonds"
    )


def status_of(reference: drift.Reference, rows: pd.DataFrame, predictions: Any) -> dict:
    """What ``GET /monitoring`` gives for a window of ``rows``."""
    result = drift.evaluate(
        reference, drift.frame_columns(rows, FEATURES), predictions, min_rows=500
    )
    window = {"rows": len(rows), "size": 5_000, "min_rows": 500, "workers": 2}
    window |= {"workers_expected": 2}
    return {"enabled": True, "window": window, **result, "reference": reference.describe()}


def table_rows(page: str) -> list[str]:
    """The column names of the page's table, in order."""
    table = page[page.index("<table>") : page.index("</table>")]
    return re.findall(r'<tr><td><a href="#feature-([^"]+)"', table)


def test_a_drifted_prediction_sits_first_in_the_table(
    reference: drift.Reference, data: pd.DataFrame
) -> None:
    rows = data.sample(3_000, random_state=1)
    status = status_of(reference, rows, rows["price"].to_numpy() * 3)  # inputs as trained
    assert status["drifted"] == ["prediction"]
    page = render(status)
    assert table_rows(page) == ["prediction", *drift_order(status)]
    assert page.index('id="feature-prediction"') < page.index('id="feature-carat"')
    # Steady, it is still in the table, after what drifted.
    calm = status_of(reference, rows, rows["price"].to_numpy())
    assert "prediction" in table_rows(render(calm))


def drift_order(status: dict) -> list[str]:
    """The features by p-value, smallest first (none drifted)."""
    features = status["features"]
    return sorted(features, key=lambda n: (features[n]["p_value"], n))


def test_tiny_p_values_print_as_below_1e_300_and_others_readably(
    reference: drift.Reference, data: pd.DataFrame
) -> None:
    rows = data.sample(5_000, random_state=2).copy()
    rows["carat"] = rows["carat"] * 1.5
    status = status_of(reference, rows, rows["price"].to_numpy())
    assert status["features"]["carat"]["p_value"] == 0.0  # below what a float holds
    page = render(status)
    carat = page[page.index('id="feature-carat"') :]
    assert "p-value &lt; 1e-300" in carat[: carat.index("</section>")]
    assert ">0<" not in page and "0.00e+00" not in page
    assert [p_value(p) for p in (0.0, 5e-324, 2.3e-12, 0.00042, 0.0312, 0.5, 1.0, None)] == [
        "< 1e-300",
        "< 1e-300",
        "2.3e-12",
        "4.2e-04",
        "0.0312",
        "0.5",
        "1",
        "–",
    ]


def svg_of(page: str, name: str) -> str:
    section = page[page.index(f'id="feature-{name}"') :]
    return section[section.index("<svg") : section.index("</svg>")]


def texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_axes_carry_several_numbered_ticks(reference: drift.Reference, data: pd.DataFrame) -> None:
    rows = data.sample(1_000, random_state=3)
    page = render(status_of(reference, rows, rows["price"].to_numpy()))
    labels = texts(svg_of(page, "carat"))
    shares = [t for t in labels if t.endswith(" %")]
    assert len(shares) >= 4 and "0 %" in shares  # the share axis, from zero
    edges = status_of(reference, rows, None)["features"]["carat"]["histogram"]["edges"]
    numbers = [t for t in labels if re.fullmatch(r"-?[\d,.]+(e[-+]\d+)?", t)]
    assert len(numbers) >= 5  # the bin edges along the bottom, not just the two ends
    assert float(numbers[0]) == pytest.approx(edges[0], rel=1e-2)
    assert float(numbers[-1].replace(",", "")) == pytest.approx(edges[-1], rel=1e-2)
    assert "\u2190 below" in labels and "above \u2192" in labels  # the outer bins
    price = [t for t in texts(svg_of(page, "prediction")) if re.fullmatch(r"[\d,]+", t)]
    assert len(price) >= 5 and any("," in t for t in price)  # thousands grouped


def test_category_labels_are_whole_and_have_room(
    reference: drift.Reference, data: pd.DataFrame
) -> None:
    rows = data.sample(1_000, random_state=4)
    page = render(status_of(reference, rows, rows["price"].to_numpy()))
    svg = svg_of(page, "cut")
    labels = texts(svg)
    assert LONG_CUT in labels and "other / unknown" in labels
    height = float(re.search(r'height="([\d.]+)"', svg)[1])
    numbers_height = float(re.search(r'height="([\d.]+)"', svg_of(page, "carat"))[1])
    assert height > numbers_height + 0.5 * len(LONG_CUT) * 6  # room below for the turned text
    assert 'transform="rotate(' in svg


def test_the_page_speaks_plainly(reference: drift.Reference, data: pd.DataFrame) -> None:
    rows = data.sample(1_000, random_state=5)
    status = status_of(reference, rows, rows["price"].to_numpy())
    status["window"] |= {"oldest": "2026-12-06T19:12:50.462+00:00", "newest": None}
    page = render(status)
    assert "tested from" not in page
    assert "from 2026-12-06 19:12:50 UTC to –" in page
    assert "Nothing is tested until at least 500 rows have arrived." in page
    assert "from 2 of the service&#x27;s 2 worker processes" in page
    assert "the less likely the live values come from the reference" in page
    assert "data the model was trained on: diamonds" in page


def test_the_canary_candidates_answers_have_their_own_section(
    reference: drift.Reference, data: pd.DataFrame
) -> None:
    rows = data.sample(1_000, random_state=6)
    status = status_of(reference, rows, rows["price"].to_numpy())
    canary = rows["price"].to_numpy()[:600] * 2
    status["candidate_prediction"] = drift.prediction_report(reference, canary, min_rows=500)
    status["window"]["candidate_rows"] = 600
    page = render(status)
    assert status["candidate_prediction"]["detected"]
    assert "candidate-prediction" not in table_rows(page)  # not in the live model's family
    section = page[page.index('id="feature-candidate-prediction"') :]
    assert "answered by the candidate model: 600 of the tested rows" in section
    assert "drifted" in section[: section.index("</h2>")]
    few = drift.prediction_report(reference, canary[:100], min_rows=500)
    assert few["p_value"] is None and not few["detected"] and not few["tested"]
    assert np.isfinite(status["candidate_prediction"]["p_value"])
