"""The rehearsal's figures: per phase the requests, 2xx, non-2xx, transport errors and HAProxy
retries; the release tags seen; how long the upgrade took; a plot of answers per second by
tag over time with the errors marked."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

# An answer: [start (Unix s), seconds, model, status (0: transport error), error, X-Tagserve-Model]
START, SECONDS, MODEL, STATUS, ERROR, ANSWERED = range(6)


def counts(answers: list[list]) -> dict[str, Any]:
    statuses = Counter(a[STATUS] for a in answers)
    errors = Counter(a[ERROR] for a in answers if a[STATUS] == 0)
    return {
        "requests": len(answers),
        "2xx": sum(n for s, n in statuses.items() if 200 <= s < 300),
        "non_2xx": sum(n for s, n in statuses.items() if s and not 200 <= s < 300),
        "transport_errors": statuses.get(0, 0),
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "transport_error_kinds": dict(errors),
    }


def tags_seen(answers: list[list], releases: dict[str, str]) -> dict[str, int]:
    """Answers per release (bento tag) seen in ``X-Tagserve-Model``."""
    seen = Counter(releases.get(a[ANSWERED], a[ANSWERED]) for a in answers if a[ANSWERED])
    return dict(sorted(seen.items()))


def build_report(
    answers: dict[str, list[list]],
    phases: list[dict],
    events: list[tuple[float, str]],
    releases: dict[str, str],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The JSON report; times relative to the first request."""
    everything = answers["rehearsal"] + answers["control"]
    t0 = min((a[START] for a in everything), default=0.0)
    per_phase = []
    for phase in phases:
        source = answers["control" if phase["name"] == "control" else "rehearsal"]
        inside = [a for a in source if phase["start"] <= a[START] < phase["end"]]
        per_phase.append(
            {
                "name": phase["name"],
                "start_s": round(phase["start"] - t0, 3),
                "seconds": round(phase["end"] - phase["start"], 3),
                **counts(inside),
                "haproxy_retries": phase["haproxy_retries"],
                "tags_seen": tags_seen(inside, releases),
                "by_model": {m: counts([a for a in inside if a[MODEL] == m]) for m in MODELS},
            }
        )
    upgrade = next(p for p in per_phase if p["name"] == "upgrade")
    return {
        "settings": settings,
        "releases": releases,
        "rehearsal": {
            **counts(answers["rehearsal"]),
            "tags_seen": tags_seen(answers["rehearsal"], releases),
        },
        "control": {
            **counts(answers["control"]),
            "tags_seen": tags_seen(answers["control"], releases),
        },
        "upgrade_seconds": upgrade["seconds"],
        "phases": per_phase,
        "events": [{"at_s": round(t - t0, 3), "event": text} for t, text in events],
        "failures": {name: failures(source, t0) for name, source in answers.items()},
    }


def failures(answers: list[list], t0: float, most: int = 50) -> list[dict[str, Any]]:
    """The first ``most`` failed answers, for reading next to the events."""
    failed = [a for a in answers if not 200 <= a[STATUS] < 300][:most]
    return [
        {
            "at_s": round(a[START] - t0, 3),
            "seconds": round(a[SECONDS], 3),
            "model": a[MODEL],
            "status": a[STATUS],
            "error": a[ERROR],
        }
        for a in failed
    ]


MODELS = ("diamonds", "penguins")


def plot(
    answers: dict[str, list[list]], report: dict[str, Any], releases: dict[str, str], path: Path
) -> None:
    """Answers per second by release tag over time; errors as red crosses; phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = answers["rehearsal"] + answers["control"]
    t0 = min(a[START] for a in everything)
    fig, ax = plt.subplots(figsize=(12, 5))
    labels = sorted({releases.get(a[ANSWERED], a[ANSWERED]) for a in everything if a[ANSWERED]})
    for label in labels:
        seconds = Counter(
            int(a[START] - t0)
            for a in everything
            if a[ANSWERED] and releases.get(a[ANSWERED], a[ANSWERED]) == label
        )
        xs = range(0, max(seconds) + 1) if seconds else []
        ax.plot(list(xs), [seconds.get(x, 0) for x in xs], label=label, drawstyle="steps-post")
    failed = [a for a in everything if not 200 <= a[STATUS] < 300]
    if failed:
        ax.scatter(
            [a[START] - t0 for a in failed],
            [0] * len(failed),
            marker="x",
            color="red",
            zorder=3,
            label=f"errors ({len(failed)})",
        )
    for phase in report["phases"]:
        if phase["name"] in ("upgrade", "kill", "control"):
            start = phase["start_s"]
            ax.axvspan(start, start + phase["seconds"], alpha=0.12, color=SHADES[phase["name"]])
            ax.text(start, ax.get_ylim()[1] * 0.95, phase["name"], fontsize=9)
    ax.set_xlabel("seconds")
    ax.set_ylabel("answers per second")
    ax.set_title("tagserve rehearsal: answers by release tag (control: no drain, no retries)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SHADES = {"upgrade": "tab:blue", "kill": "tab:orange", "control": "tab:red"}


def write(report: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def balancer_log(path: Path, most: int = 20) -> dict[str, Any]:
    """HAProxy's requests that were retried, redispatched or failed (it logs only those), per
    frontend: how many, and the first ``most`` lines with their termination state (``----``:
    answered, ``SC--``: no server connection, ``SH--``: the server failed before its
    headers, ``SD--``: during its answer) and retries (``+1``: redispatched)."""
    lines: dict[str, list[str]] = {"models": [], "control": []}
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[2] in lines:
            lines[parts[2]].append(line)
    names = {"models": "rehearsal", "control": "control"}
    return {
        names[k]: {
            "count": len(v),
            "failed": [line for line in v if " ---- " not in line][:most],
            "first": v[:most],
        }
        for k, v in lines.items()
    }
