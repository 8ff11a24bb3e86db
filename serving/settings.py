"""The service's settings (environment, read in every worker) and where its code comes from."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inference.constants import DEFAULT_MODEL, MODEL_ENV
from inference.domain import ACCEPT, REFUSE, Policy, policy_from_env
from inference.envvars import usable_cores

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The default body cap, per row of a request: 64 bytes a row and 128 a value leave room for
# indentation, long names and text in any accepted format, and still refuse (413) a body many
# times larger than max_rows rows.
ROW_BYTES, VALUE_BYTES, BODY_SLACK_BYTES = 64, 128, 65_536


def env_int(name: str, default: int, least: int = 1) -> int:
    """The whole number in the environment variable ``name`` (``default`` when unset)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < least:
        raise ValueError(f"{name} must be at least {least}, not {value}")
    return value


def env_fraction(name: str, default: float, most: float) -> float:
    """The number in the environment variable ``name``, from 0 to ``most``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if not 0 <= value <= most:  # NaN included
        raise ValueError(f"{name} must be from 0 to {most:g}, not {raw}")
    return value


@dataclass(frozen=True)
class Settings:
    """``TAGSERVE_*`` settings (the docs' serving page lists them)."""

    model: str = DEFAULT_MODEL
    max_rows: int = 10_000
    # Adaptive batching: one model call costs about the same whatever its rows, so batches
    # may grow large: bulk requests of a thousand records merge a few at a time too, where
    # each call's fixed costs (the batcher's dispatch, a thread hand-over) are paid per
    # request at a few hundred rows. The latency budget must cover several model calls plus
    # queueing, or the batcher sheds load (503). Figures: benchmarks/results/.
    max_batch_size: int = 4096
    max_latency_ms: int = 2_000
    # Model calls one worker's batcher runs at once; 0: chosen by the model's engine
    # (for_engine). The compiled forest walks outside the GIL, so a second call uses a core
    # the first leaves idle; scikit-learn holds the GIL, so a second call would only halve
    # the batches. A call still takes every request queued when it starts.
    batch_calls: int = 0
    # One worker per usable core (TAGSERVE_WORKERS to choose): each worker loads its own copy
    # of the model, batches only its own requests and has its own /predict budget
    # (benchmarks/workers.py measures the choice).
    workers: int = field(default_factory=usable_cores)
    # The largest request body; None: bounded by max_rows (with_body_cap).
    max_body_bytes: int | None = None
    # /predict load shedding (serving.admission), per worker: one request computes (on the
    # worker's event loop), at most `predict_queue` wait behind it; the rest get 503 +
    # Retry-After at once, so the requests accepted keep a bounded latency. The default
    # trades the latency of accepted requests against refusals of paced clients
    # (`make bench-load` measures both).
    predict_queue: int = 63
    retry_after_s: int = 1
    # /predict_batch and /invocations: the same kind of budget, their own (a bulk request
    # waits in the adaptive batcher or for a model call; the budget bounds what they hold).
    bulk_queue: int = 63
    # The deadline for a request's body to arrive once its headers have (serving.arrival):
    # past it 408 and its admission slot is freed. An honest client sends its body at once.
    request_read_s: float = 5.0
    # --- a candidate model beside the live one: shadow and canary (serving.routing) ---
    # A second model (a BentoML tag) loaded beside the live one; none: "".
    candidate: str = ""
    shadow_fraction: float = 0.0  # the share of requests also scored by the candidate
    canary_percent: float = 0.0  # the share (%) of requests answered by the candidate
    # --- graceful drain (serving.drain) ---
    # On SIGTERM: the bound on the drain; below Kubernetes' default grace period (30 s), so
    # the pod's own SIGKILL never cuts a drain.
    drain_seconds: int = 20
    # --- live monitoring (serving.monitoring) ---
    monitor: bool = True
    monitor_every_s: float = 30.0
    monitor_window: int = 5_000
    monitor_min_rows: int = 500
    monitor_dir: str | None = None
    # --- the model's domain (inference.domain): values outside it refused (400) or served ---
    domain_policy: Policy = field(default_factory=Policy)

    @classmethod
    def from_env(cls, args: Mapping[str, Any] | None = None) -> Settings:
        """From the environment; the bento argument ``model`` wins over ``TAGSERVE_MODEL``."""
        args = args or {}
        return cls(
            model=str(args.get("model") or os.environ.get(MODEL_ENV) or DEFAULT_MODEL),
            max_rows=env_int("TAGSERVE_MAX_ROWS", cls.max_rows),
            max_batch_size=env_int("TAGSERVE_MAX_BATCH_SIZE", cls.max_batch_size, least=2),
            max_latency_ms=env_int("TAGSERVE_MAX_LATENCY_MS", cls.max_latency_ms),
            batch_calls=env_int("TAGSERVE_BATCH_CALLS", 0, least=0),
            workers=env_int("TAGSERVE_WORKERS", usable_cores()),
            max_body_bytes=env_int("TAGSERVE_MAX_BODY_BYTES", 0) or None,
            predict_queue=env_int("TAGSERVE_PREDICT_QUEUE", cls.predict_queue, least=0),
            retry_after_s=env_int("TAGSERVE_RETRY_AFTER", cls.retry_after_s),
            bulk_queue=env_int("TAGSERVE_BULK_QUEUE", cls.bulk_queue, least=0),
            request_read_s=env_seconds("TAGSERVE_REQUEST_READ_SECONDS", cls.request_read_s),
            candidate=str(args.get("candidate") or os.environ.get("TAGSERVE_CANDIDATE") or ""),
            shadow_fraction=env_fraction("TAGSERVE_SHADOW_FRACTION", 0.0, 1.0),
            canary_percent=env_fraction("TAGSERVE_CANARY_PERCENT", 0.0, 100.0),
            drain_seconds=env_int("TAGSERVE_DRAIN_SECONDS", cls.drain_seconds),
            domain_policy=policy_from_env(),
            **monitor_settings(cls),
        )

    def for_engine(self, compiled: bool) -> Settings:
        """These settings with ``batch_calls`` chosen where not set: a worker's share of the
        usable cores for a ``compiled`` model (the fast path), one call for scikit-learn."""
        if self.batch_calls:
            return self
        calls = max(1, usable_cores() // max(self.workers, 1)) if compiled else 1
        return replace(self, batch_calls=calls)

    def with_body_cap(self, columns: int) -> Settings:
        """These settings with ``max_body_bytes`` set: TAGSERVE_MAX_BODY_BYTES, else room for
        ``max_rows`` rows of ``columns`` values in any accepted format, so a body too large
        to hold an accepted request is refused before it is read and parsed."""
        if self.max_body_bytes is not None:
            return self
        per_row = ROW_BYTES + VALUE_BYTES * columns
        return replace(self, max_body_bytes=BODY_SLACK_BYTES + self.max_rows * per_row)

    @property
    def predict_budget(self) -> int:
        """The ``/predict`` requests one worker admits at once: the one computing plus the
        queue."""
        return 1 + self.predict_queue

    @property
    def bulk_budget(self) -> int:
        """The ``/predict_batch`` (and, apart, ``/invocations``) requests one worker admits at
        once."""
        return 1 + self.bulk_queue

    def shedding(self, paths: list[str]) -> dict[str, Any]:
        """The options of ``serving.middleware.LoadShedding`` for ``paths``: each path's
        budget (``/predict``'s, else the bulk one) and the setting that sizes it."""
        budgets = {
            path: (self.predict_budget, "TAGSERVE_PREDICT_QUEUE")
            if path == "/predict"
            else (self.bulk_budget, "TAGSERVE_BULK_QUEUE")
            for path in paths
        }
        return {
            "budgets": budgets,
            "retry_after": self.retry_after_s,
            "read_seconds": self.request_read_s,
            "max_body_bytes": self.max_body_bytes,
        }

    def limits(self) -> dict[str, int]:
        limits = {
            "max_rows": self.max_rows,
            "max_batch_size": self.max_batch_size,
            "max_latency_ms": self.max_latency_ms,
            "batch_calls_per_worker": self.batch_calls,
            "predict_budget_per_worker": self.predict_budget,
            "bulk_budget_per_worker": self.bulk_budget,
            "retry_after_s": self.retry_after_s,
        }
        if self.max_body_bytes is not None:
            limits["max_body_bytes"] = self.max_body_bytes
        return limits

    def domain_enforced(self) -> dict[str, str]:
        """TAGSERVE_UNKNOWN_CATEGORIES and TAGSERVE_OUT_OF_RANGE as in force (for /metadata)."""
        policy = self.domain_policy
        return {
            "unknown_categories": REFUSE if policy.refuse_unknown_categories else ACCEPT,
            "out_of_range": REFUSE if policy.refuse_out_of_range else ACCEPT,
        }


def env_switch(name: str, default: bool) -> bool:
    """An on/off environment variable (on/off, true/false, 1/0, yes/no)."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {raw!r}")


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds in the environment variable ``name``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be more than 0 seconds, not {raw!r}")
    return value


def monitor_settings(cls: type[Settings]) -> dict[str, Any]:
    """The live monitoring's settings: TAGSERVE_MONITOR (on|off), TAGSERVE_MONITOR_EVERY
    (seconds between tests), TAGSERVE_MONITOR_WINDOW (rows tested), TAGSERVE_MONITOR_MIN_ROWS
    (fewer: not tested), TAGSERVE_MONITOR_DIR (the folder the workers share)."""
    return {
        "monitor": env_switch("TAGSERVE_MONITOR", cls.monitor),
        "monitor_every_s": env_seconds("TAGSERVE_MONITOR_EVERY", cls.monitor_every_s),
        "monitor_window": env_int("TAGSERVE_MONITOR_WINDOW", cls.monitor_window),
        "monitor_min_rows": env_int("TAGSERVE_MONITOR_MIN_ROWS", cls.monitor_min_rows),
        "monitor_dir": os.environ.get("TAGSERVE_MONITOR_DIR", "").strip() or None,
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def source_revision(args: Mapping[str, Any]) -> dict[str, str]:
    """The git commit and release tag of this code: from the bento arguments (a built bento
    carries them), else from the checkout this code lives in, else unknown ("")."""
    if "git_commit" in args:
        return {"git_commit": str(args["git_commit"]), "git_tag": str(args.get("git_tag", ""))}
    if _git("rev-parse", "--show-toplevel") != str(PROJECT_ROOT):
        return {"git_commit": "", "git_tag": ""}  # not the root of a checkout: a bento
    commit = _git("rev-parse", "HEAD")
    tags = _git("tag", "--points-at", "HEAD").split()
    return {"git_commit": commit, "git_tag": " ".join(sorted(tags))}
