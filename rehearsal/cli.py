"""``python -m rehearsal [--quick]`` (``make rehearse``, as root): build the bentos, rehearse,
write benchmarks/results/rehearsal.{json,png} and print the closing line. A refusal or failure
prints one line, ``error: ...``, and exits with 1; everything is torn down in every case."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from rehearsal import report
from rehearsal.bentos import PROJECT_ROOT, BuildError, build_bentos
from rehearsal.network import NetworkError
from rehearsal.phases import FULL, QUICK, Rehearsal

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


class Interrupted(Exception):
    """A signal asked the rehearsal to stop."""


def on_signal(signum: int, _frame: object) -> None:
    for other in SIGNALS:  # one is enough: the teardown must not be interrupted in turn
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rehearsal", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 diamonds replicas, short phases")
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "rehearsal.json", help="the JSON report's path"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (bentos, logs)"
    )
    return parser.parse_args(argv)


def refusal() -> str | None:
    """Why the rehearsal cannot run here, if it cannot."""
    if os.geteuid() != 0:
        return "the rehearsal makes network namespaces: run it as root"
    for tool in ("ip", "haproxy"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make rehearse installs haproxy; ip is iproute2)"
    return None


def closing_line(data: dict, path: Path) -> str:
    main, control = data["rehearsal"], data["control"]
    errors = control["non_2xx"] + control["transport_errors"]
    return (
        f"rehearsal: {main['requests']} requests, {main['non_2xx']} non-2xx, "
        f"{main['transport_errors']} transport errors (control: {errors} errors) -> {path}"
    )


def rehearse(args: argparse.Namespace, scratch: Path) -> Path:
    shape = QUICK if args.quick else FULL
    print("rehearsal: building the bentos in a scratch folder", file=sys.stderr, flush=True)
    bentos = build_bentos(scratch / "build", args.quick, scratch / "build.log")
    folder = scratch / "run"
    folder.mkdir()
    rehearsal = Rehearsal(shape, bentos, folder)
    atexit.register(rehearsal.teardown)
    try:
        rehearsal.set_up()
        answers = rehearsal.run()
    finally:
        rehearsal.teardown()
    settings = {
        "quick": args.quick,
        "diamonds_replicas": shape.diamonds,
        "penguins_replicas": shape.penguins,
        "steady_seconds": shape.steady_s,
        "hosts": rehearsal.network.hosts,
        "bentos": {"diamonds": list(bentos.diamonds), "penguins": bentos.penguins},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    timeline = rehearsal.timeline
    data = report.build_report(answers, timeline.phases, timeline.events, bentos.models, settings)
    data["haproxy_abnormal"] = report.balancer_log(folder / "haproxy.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(data, args.out)
    report.plot(answers, data, bentos.models, args.out.with_suffix(".png"))
    print(closing_line(data, args.out))
    return args.out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if reason := refusal():
        print(f"error: {reason}", file=sys.stderr)
        return 1
    for signum in SIGNALS:
        signal.signal(signum, on_signal)
    scratch = Path(tempfile.mkdtemp(prefix="tagserve-rehearsal-"))
    try:
        rehearse(args, scratch)
    except Interrupted as exc:
        print(f"error: rehearsal stopped: {exc}: everything torn down", file=sys.stderr)
        return 1
    except (BuildError, NetworkError, RuntimeError, TimeoutError) as exc:
        print(f"error: rehearsal stopped: {exc} (logs kept in {scratch})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0
