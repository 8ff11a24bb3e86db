"""The drift report page: one evaluation (``inference.drift.evaluate``, as ``GET /monitoring``
or ``python -m clients drift`` give it) as a self-contained HTML page: no script, no external
resource, reference against live distribution per feature as inline SVG bars, drifted
features first."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

WIDTH, HEIGHT, PAD = 620, 150, 30
REFERENCE_COLOUR, LIVE_COLOUR, DRIFT_COLOUR = "#9aa5b1", "#1f6feb", "#cf222e"

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#1f2328}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;
text-align:right}th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.drift{color:#cf222e;font-weight:bold}.ok{color:#1a7f37}section{margin:1.5em 0}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}
.muted{color:#656d76}
"""


def number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float) and value != 0 and abs(value) < 10**-digits:
        return f"{value:.2e}"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def share(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f} %"


def bars(hist: Mapping[str, Any], drifted: bool) -> str:
    """An inline SVG: reference and live share per bin, side by side."""
    reference, live = hist.get("reference") or [], hist.get("live") or []
    n = max(len(reference), 1)
    top = max([*reference, *live, 1e-12])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    slot = inner_w / n
    colour = DRIFT_COLOUR if drifted else LIVE_COLOUR
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f'<line x1="{PAD}" y1="{PAD + inner_h}" x2="{PAD + inner_w}" y2="{PAD + inner_h}" '
        'stroke="#57606a"/>',
    ]
    for i, (r, v) in enumerate(zip(reference, live, strict=False)):
        x = PAD + i * slot
        for j, (value, fill) in enumerate(((r, REFERENCE_COLOUR), (v, colour))):
            h = inner_h * value / top
            parts.append(
                f'<rect x="{x + j * slot / 2 + 1:.1f}" y="{PAD + inner_h - h:.1f}" '
                f'width="{max(slot / 2 - 2, 1):.1f}" height="{h:.1f}" fill="{fill}">'
                f"<title>{100 * value:.1f} %</title></rect>"
            )
    labels = hist.get("labels")
    if labels:
        for i, label in enumerate(labels):
            x = PAD + (i + 0.5) * slot
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="10" text-anchor="middle">'
                f"{html.escape(str(label)[:12])}</text>"
            )
    else:
        edges = hist.get("edges") or [0, 1]
        ends = (
            (PAD, f"< {number(float(edges[0]))}", "start"),
            (PAD + inner_w, f"> {number(float(edges[-1]))}", "end"),
        )
        for x, text, anchor in ends:
            parts.append(
                f'<text x="{x}" y="{HEIGHT - 8}" font-size="11" text-anchor="{anchor}">'
                f"{html.escape(text)}</text>"
            )
    parts.append(
        f'<text x="{PAD}" y="{PAD - 10}" font-size="11">max {100 * top:.1f} % of rows</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def feature_section(name: str, entry: Mapping[str, Any]) -> str:
    detected = bool(entry.get("detected"))
    verdict = '<span class="drift">drift</span>' if detected else '<span class="ok">no drift</span>'
    test = "Kolmogorov-Smirnov" if entry.get("test") == "ks" else "chi-square"
    quality = [f"missing {share(entry.get('missing_ratio'))}"]
    if "unknown_category_ratio" in entry:
        quality.append(f"unknown categories {share(entry['unknown_category_ratio'])}")
        if entry.get("unknown_categories"):
            shown = ", ".join(html.escape(str(c)) for c in entry["unknown_categories"])
            quality.append(f"({shown})")
    if "out_of_range_ratio" in entry:
        quality.append(f"outside the reference range {share(entry['out_of_range_ratio'])}")
    hist = entry.get("histogram") or {}
    return (
        f'<section id="feature-{html.escape(name)}"><h2>{html.escape(name)} {verdict}</h2>'
        f"<p>{test}: statistic {number(entry.get('statistic'))}, p-value "
        f"{number(entry.get('p_value'))}; {'; '.join(quality)}</p>"
        f"{bars(hist, detected)}</section>"
    )


def ordered(features: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Drifted features first, then by p-value (smallest first; untested last)."""

    def key(name: str) -> tuple[int, float, str]:
        entry = features[name]
        p = entry.get("p_value")
        return (0 if entry.get("detected") else 1, 2.0 if p is None else float(p), name)

    return sorted(features, key=key)


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
    features = status.get("features") or {}
    window = status.get("window") or {}
    if not features:
        reason = html.escape(str(status.get("reason") or "no data yet"))
        return head + f"<p>{reason}</p></body></html>"
    drifted = status.get("drifted") or []
    prediction = status.get("prediction")
    summary = (
        f"<p>Window: {window.get('rows', 0)} rows (newest {window.get('size', '?')} kept; "
        f"tested from {window.get('min_rows', '?')}), {window.get('oldest') or '–'} to "
        f"{window.get('newest') or '–'}; evaluated {status.get('evaluated_at') or '–'}. "
        f"Tests: KS per number, chi-square per category, {status.get('correction')} "
        f"correction at alpha {status.get('alpha')}. Reference: "
        f"{html.escape(str((status.get('reference') or {}).get('source') or '–'))}.</p>"
        + (
            f'<p class="drift">Drifted: {html.escape(", ".join(drifted))}</p>'
            if drifted
            else '<p class="ok">No drift detected.</p>'
        )
        + ("" if status.get("tested", True) else '<p class="muted">Too few rows to test.</p>')
        + '<p class="legend"><span style="background:#9aa5b1"></span>reference'
        '<span style="background:#1f6feb"></span>live'
        '<span style="background:#cf222e"></span>live, drifted</p>'
    )
    rows = []
    names = ordered(features)
    for name in names:
        e = features[name]
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{e.get('test')}</td>"
            f"<td>{number(e.get('statistic'))}</td><td>{number(e.get('p_value'))}</td>"
            f"<td>{'yes' if e.get('detected') else 'no'}</td>"
            f"<td>{share(e.get('missing_ratio'))}</td>"
            f"<td>{share(e.get('unknown_category_ratio'))}</td>"
            f"<td>{share(e.get('out_of_range_ratio'))}</td></tr>"
        )
    table = (
        "<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th>"
        "<th>drift</th><th>missing</th><th>unknown category</th><th>out of range</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    sections = [feature_section(n, features[n]) for n in names]
    if prediction:
        sections.append(feature_section("prediction", prediction))
    return head + summary + table + "".join(sections) + "</body></html>"
