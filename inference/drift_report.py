"""The drift report page: one evaluation (``inference.drift.evaluate``, as ``GET /monitoring``
or ``python -m clients drift`` give it) as a self-contained HTML page: no script, no external
resource. A table of every tested column (the features and the model's prediction), drifted
first; then per column the reference against the live distribution as inline SVG bars, with
labelled axes; the canary candidate's answers in a section of their own. Worded for a reader
who has not read the docs."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH, HEIGHT = 680, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 22, 34  # the plot's margins: room for the axes' labels
Y_TICKS = 4  # gridlines above zero on the share axis
X_TICK_EVERY = 4  # a number histogram labels every 4th bin edge
LABEL_ANGLE = 40  # category labels are turned by this many degrees to fit under their bars
NUMBER_ROWS_H = 12  # a number histogram's second row of labels (below, above)
CHAR_W = 6.2  # the width of one character of an 11 px label, about
SMALLEST_P = 1e-300  # below it a p-value prints as "< 1e-300" (a float may underflow to 0)
PREDICTION = "prediction"
REFERENCE_COLOUR, LIVE_COLOUR, DRIFT_COLOUR = "#9aa5b1", "#1f6feb", "#cf222e"

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#1f2328;
max-width:60em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;
padding:4px 8px;text-align:right}td{white-space:nowrap}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}.drift{color:#cf222e;font-weight:bold}
.ok{color:#1a7f37}section{margin:1.5em 0}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}
.muted{color:#656d76}svg text{font-size:11px;fill:#1f2328}
"""
TEST_NAMES = {"ks": "Kolmogorov-Smirnov", "chi2": "chi-square"}


def number(value: Any, digits: int = 4) -> str:
    """A figure in at most ``digits`` significant digits; "–" for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float) and value != 0 and abs(value) < 10**-digits:
        return f"{value:.2e}"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def p_value(value: Any) -> str:
    """A p-value as a reader takes it in: 0.031, 0.0004, 2.3e-12, or ``< 1e-300`` for one so
    small the float holding it cannot tell it from 0; "–" when not tested."""
    if value is None or not math.isfinite(float(value)):
        return "–"
    p = float(value)
    if p < SMALLEST_P:
        return f"< {SMALLEST_P:.0e}"
    if p >= 0.001:
        return f"{p:.3g}" if p < 1 else "1"
    return f"{p:.1e}"


def share(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f} %"


def tick(value: float) -> str:
    """An axis label: few digits, thousands grouped."""
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.2g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def svg_text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(text)}</text>'


def nice_step(top: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``Y_TICKS`` steps to
    ``top``."""
    raw = max(top, 1e-12) / Y_TICKS
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def y_axis(step: float, ticks: int, inner_w: float, inner_h: float) -> list[str]:
    """Gridlines and labels of the share of rows, from 0 by ``step``."""
    parts = []
    for k in range(ticks + 1):
        value = step * k
        y = TOP + inner_h * (1 - k / ticks)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + inner_w}" y2="{y:.1f}" '
            f'stroke="{"#57606a" if k == 0 else "#eaeef2"}"/>'
        )
        parts.append(svg_text(LEFT - 6, y + 4, f"{100 * value:.3g} %", "end"))
    return parts


def number_ticks(edges: Sequence[float], slot: float, y: float) -> list[str]:
    """Under a number histogram: the bin edges every ``X_TICK_EVERY`` bins, and the two
    outer bins (values below and above the reference's usual range) named as such."""
    outer = y + 14  # a row of its own: a bin's label would overlap the edges' numbers
    parts = [svg_text(LEFT, outer, "\u2190 below", "start", ' class="muted"')]
    for k in range(0, len(edges), X_TICK_EVERY):
        x = LEFT + (k + 1) * slot  # the first slot is the "below" bin
        parts.append(
            f'<line x1="{x:.1f}" y1="{y - 13}" x2="{x:.1f}" y2="{y - 9}" stroke="#57606a"/>'
        )
        parts.append(svg_text(x, y, tick(float(edges[k]))))
    end = LEFT + (len(edges) + 1) * slot
    parts.append(svg_text(end, outer, "above \u2192", "end", ' class="muted"'))
    return parts


def category_ticks(labels: Sequence[str], slot: float, y: float) -> list[str]:
    """Under a category histogram: every label whole, turned to fit under its bars."""
    return [
        svg_text(
            LEFT + (i + 0.5) * slot,
            y,
            str(label),
            "end",
            f' transform="rotate(-{LABEL_ANGLE} {LEFT + (i + 0.5) * slot:.1f} {y:.1f})"',
        )
        for i, label in enumerate(labels)
    ]


def bars(hist: Mapping[str, Any], drifted: bool) -> str:
    """An inline SVG: reference and live share of rows per bin, side by side, with labelled
    axes (share of rows up the side; bin edges or categories along the bottom)."""
    reference, live = hist.get("reference") or [], hist.get("live") or []
    labels = [str(label) for label in hist.get("labels") or []]
    n = max(len(reference), 1)
    step = nice_step(max([*reference, *live, 1e-12]))
    ticks = max(1, math.ceil(max([*reference, *live, 1e-12]) / step - 1e-9))
    top = step * ticks
    # Turned labels need room below the plot, as much as the longest one takes.
    longest = max((len(label) for label in labels), default=0)
    turned = longest * CHAR_W * math.sin(math.radians(LABEL_ANGLE))
    bottom = BOTTOM + (turned if labels else NUMBER_ROWS_H)
    # ...and on the left, where the first ones reach past the axis.
    left_reach = longest * CHAR_W * math.cos(math.radians(LABEL_ANGLE))
    offset = max(0.0, left_reach - LEFT)
    height = HEIGHT + bottom - BOTTOM
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = inner_w / n
    colour = DRIFT_COLOUR if drifted else LIVE_COLOUR
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH + offset:.0f}" '
        f'height="{height:.0f}" viewBox="{-offset:.0f} 0 {WIDTH + offset:.0f} {height:.0f}" '
        'role="img">',
        *y_axis(step, ticks, inner_w, inner_h),
    ]
    for i, (r, v) in enumerate(zip(reference, live, strict=False)):
        x = LEFT + i * slot
        for j, (value, fill, who) in enumerate(
            ((r, REFERENCE_COLOUR, "reference"), (v, colour, "live"))
        ):
            h = inner_h * value / top
            parts.append(
                f'<rect x="{x + j * slot / 2 + 1:.1f}" y="{TOP + inner_h - h:.1f}" '
                f'width="{max(slot / 2 - 2, 1):.1f}" height="{h:.1f}" fill="{fill}">'
                f"<title>{who}: {100 * value:.1f} % of rows</title></rect>"
            )
    below = TOP + inner_h + 16
    if labels:
        parts += category_ticks(labels, slot, below)
    else:
        parts += number_ticks(hist.get("edges") or [0.0, 1.0], slot, below)
    parts.append("</svg>")
    return "".join(parts)


def verdict(entry: Mapping[str, Any]) -> str:
    if entry.get("p_value") is None:
        return '<span class="muted">not tested</span>'
    if entry.get("detected"):
        return '<span class="drift">drifted</span>'
    return '<span class="ok">no drift</span>'


def quality(entry: Mapping[str, Any]) -> str:
    """The data quality of a column, in words."""
    said = [f"{share(entry.get('missing_ratio'))} of rows lack a value"]
    if entry.get("unknown_category_ratio") is not None:
        said.append(f"{share(entry['unknown_category_ratio'])} hold a category never seen")
        if entry.get("unknown_categories"):
            shown = ", ".join(html.escape(str(c)) for c in entry["unknown_categories"])
            said[-1] += f" ({shown})"
    if "out_of_range_ratio" in entry:
        said.append(f"{share(entry['out_of_range_ratio'])} fall outside the reference's range")
    return "; ".join(said) + "."


def column_section(name: str, entry: Mapping[str, Any], title: str = "") -> str:
    """One column: its verdict, its test in a sentence, its data quality, its bars."""
    detected = bool(entry.get("detected"))
    test = TEST_NAMES.get(str(entry.get("test")), str(entry.get("test")))
    if entry.get("p_value") is None:
        finding = "Not tested: too few rows."
    else:
        finding = (
            f"{test} test: p-value {html.escape(p_value(entry.get('p_value')))} "
            f"(statistic {number(entry.get('statistic'))}). The smaller the p-value, the less "
            "likely the live values come from the reference's distribution."
        )
    return (
        f'<section id="feature-{html.escape(name)}"><h2>{html.escape(title or name)} '
        f"{verdict(entry)}</h2><p>{finding} {quality(entry)}</p>"
        f"{bars(entry.get('histogram') or {}, detected)}</section>"
    )


def ordered(columns: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Drifted first, then by p-value (smallest first; untested last)."""

    def key(name: str) -> tuple[int, float, str]:
        entry = columns[name]
        p = entry.get("p_value")
        return (0 if entry.get("detected") else 1, 2.0 if p is None else float(p), name)

    return sorted(columns, key=key)


def table(columns: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> str:
    rows = []
    for name in names:
        e = columns[name]
        shown = "prediction (the model's answer)" if name == PREDICTION else name
        rows.append(
            f'<tr><td><a href="#feature-{html.escape(name)}">{html.escape(shown)}</a></td>'
            f"<td>{verdict(e)}</td><td>{html.escape(p_value(e.get('p_value')))}</td>"
            f"<td>{TEST_NAMES.get(str(e.get('test')), '–')}</td>"
            f"<td>{share(e.get('missing_ratio'))}</td>"
            f"<td>{share(e.get('unknown_category_ratio'))}</td>"
            f"<td>{share(e.get('out_of_range_ratio'))}</td></tr>"
        )
    return (
        "<table><tr><th>column</th><th>drift</th><th>p-value</th><th>test</th>"
        "<th>no value</th><th>unknown category</th><th>outside the reference&#x27;s range</th>"
        "</tr>" + "".join(rows) + "</table>"
    )


def when(stamp: Any) -> str:
    """An ISO time as a reader writes it, to the second, in UTC; "–" for none."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(str(stamp)).astimezone(UTC)
    except ValueError:
        return "–" if not stamp else str(stamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def window_sentence(status: Mapping[str, Any]) -> str:
    """What was tested, in plain words."""
    window = status.get("window") or {}
    rows, size = window.get("rows", 0), window.get("size", "?")
    said = (
        f"Tested: the newest {rows:,} rows the service answered (it keeps at most {size:,}), "
        if isinstance(rows, int) and isinstance(size, int)
        else f"Tested: {rows} rows, "
    )
    said += f"from {when(window.get('oldest'))} to {when(window.get('newest'))}"
    if window.get("workers_expected"):
        said += f", from {window.get('workers')} of the service's {window['workers_expected']} "
        said += "worker processes"
    said += f"; tested at {when(status.get('evaluated_at'))}."
    if window.get("min_rows", 1) > 1:
        said += f" Nothing is tested until at least {window['min_rows']:,} rows have arrived."
    return f"<p>{html.escape(said)}</p>"


def method_sentence(status: Mapping[str, Any]) -> str:
    reference = html.escape(str((status.get("reference") or {}).get("source") or "–"))
    correction = {"bonferroni": "Bonferroni", "holm": "Holm"}.get(
        str(status.get("correction")), str(status.get("correction"))
    )
    return (
        "<p>Each column is compared with the reference (the data the model was trained on: "
        f"{reference}): numbers with the Kolmogorov-Smirnov test, categories with the "
        f"chi-square test. A column has drifted when its p-value is below {status.get('alpha')} "
        f"after the {correction} correction, which accounts for testing many columns at once "
        "(a few would otherwise look drifted by chance).</p>"
    )


def candidate_section(entry: Mapping[str, Any] | None, window: Mapping[str, Any]) -> str:
    """The canary candidate's answers, tested apart from the live model's."""
    if not entry:
        return ""
    intro = (
        f"<p>A share of requests (the canary) is answered by the candidate model: "
        f"{window.get('candidate_rows', entry.get('rows'))} of the tested rows. Its answers "
        "are compared with the reference on their own, at the same level, and are not part of "
        "the table above.</p>"
    )
    section = column_section("candidate-prediction", entry, "the candidate's answers (canary)")
    return section.replace("</h2>", "</h2>" + intro, 1)


def render(status: Mapping[str, Any], *, model: str = "") -> str:
    """The page of one monitoring status (``GET /monitoring``'s JSON)."""
    title = f"Drift report{': ' + model if model else ''}"
    head = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
    )
    if not status.get("enabled"):
        reason = html.escape(str(status.get("reason")))
        return head + f"<p>Not monitored: {reason}</p></body></html>"
    columns = dict(status.get("features") or {})
    if not columns:
        reason = html.escape(str(status.get("reason") or "no data yet"))
        return head + f"<p>{reason}</p></body></html>"
    if status.get("prediction"):
        columns[PREDICTION] = status["prediction"]
    drifted = [n for n in ordered(columns) if columns[n].get("detected")]
    summary = (
        window_sentence(status)
        + method_sentence(status)
        + (
            f'<p class="drift">Drifted: {html.escape(", ".join(drifted))}.</p>'
            if drifted
            else '<p class="ok">No column has drifted.</p>'
        )
        + ("" if status.get("tested", True) else '<p class="muted">Too few rows to test.</p>')
        + f'<p class="legend"><span style="background:{REFERENCE_COLOUR}"></span>reference'
        f'<span style="background:{LIVE_COLOUR}"></span>live'
        f'<span style="background:{DRIFT_COLOUR}"></span>live, drifted</p>'
    )
    names = ordered(columns)
    sections = [column_section(n, columns[n]) for n in names]
    canary = candidate_section(status.get("candidate_prediction"), status.get("window") or {})
    return head + summary + table(columns, names) + "".join(sections) + canary + "</body></html>"
