"""Every Prometheus metric the service declares, in one place and one style: a class per
concern whose metrics are made together by one accessor, once per process, on first use.

First use is in the worker, never at import: BentoML points prometheus_client at its
multiprocess folder when a worker starts, after the service module is imported, and
``/metrics`` sums every worker's files. A gauge therefore names its multiprocess mode.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from inference.compare import ABS_DIFF_BUCKETS


def _prom() -> Any:
    # Imported in the worker only: prometheus_client picks its value store (multiprocess or
    # not) when first imported, and BentoML sets the multiprocess folder when a worker starts.
    import prometheus_client  # BentoML's own metrics library

    return prometheus_client


SHED_METRIC = "tagserve_shed_requests"  # /metrics: tagserve_shed_requests_total{endpoint}


class SheddingMetrics:
    """``/predict``'s load shedding: BentoML's request metrics never see a refusal (it
    happens before them), so it is counted here."""

    def __init__(self) -> None:
        prom = _prom()
        self.refused = prom.Counter(
            SHED_METRIC,
            "Requests refused with 503 by tagserve's load shedding",
            labelnames=["endpoint"],
        )


class ArrivalMetrics:
    """Requests that never became whole (``serving.arrival``): timed out while their body
    arrived (408), or abandoned by their client before their answer."""

    def __init__(self) -> None:
        prom = _prom()
        self.read_timeout = prom.Counter(
            "tagserve_requests_read_timeout",
            "Requests whose body did not arrive within TAGSERVE_REQUEST_READ_SECONDS (408)",
            labelnames=["endpoint"],
        )
        self.abandoned = prom.Counter(
            "tagserve_requests_abandoned",
            "Requests whose client hung up before their answer (their slot freed at once)",
            labelnames=["endpoint"],
        )


class ShadowMetrics:
    """The shadow's comparison of the candidate with the live model, and each model's
    latency. Only the figures that mean something for the ``task``: a regressor's |diff|
    histogram, or a classifier's agreement (a regressor's agreed rows would read 0, as if it
    never agreed). Each metric is made once per process (``_shadow_metric``)."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.requests = _shadow_metric("requests")
        self.dropped = _shadow_metric("dropped")
        self.rows = _shadow_metric("rows")
        self.latency = _shadow_metric("latency")
        regressor = task != "classification"
        self.abs_diff: Any = _shadow_metric("abs_diff") if regressor else None
        self.agreed: Any = None if regressor else _shadow_metric("agreed")
        self.agreement: Any = None if regressor else _shadow_metric("agreement")


@cache
def _shadow_metric(name: str) -> Any:
    prom = _prom()
    if name == "requests":
        return prom.Counter(
            "tagserve_shadow_requests", "Requests the candidate scored in the shadow"
        )
    if name == "dropped":
        return prom.Counter(
            "tagserve_shadow_dropped",
            "Shadow calls dropped: the queue was full (shed first) or the candidate failed",
            labelnames=["reason"],
        )
    if name == "rows":
        return prom.Counter("tagserve_shadow_rows", "Rows the candidate scored in the shadow")
    if name == "latency":
        return prom.Histogram(
            "tagserve_model_latency_seconds",
            "Time of one model call, by model tag",
            labelnames=["model"],
        )
    if name == "abs_diff":
        return prom.Histogram(
            "tagserve_shadow_abs_diff",
            "|candidate - live| per row (regressors)",
            buckets=ABS_DIFF_BUCKETS,
        )
    if name == "agreed":
        return prom.Counter(
            "tagserve_shadow_agreed_rows", "Rows where the candidate predicts the live class"
        )
    # A ratio cannot be summed over workers: one series per worker (pid label); the service's
    # ratio is agreed_rows_total / rows_total.
    return prom.Gauge(
        "tagserve_shadow_agreement_ratio",
        "This worker's share of shadow rows where the candidate agrees (classifiers)",
        multiprocess_mode="liveall",
    )


def _latest(name: str, doc: str, *labels: str) -> Any:
    # Only the monitoring leader sets these; "mostrecent" exports the newest value written by
    # any process, so a former leader's older values lose.
    return _prom().Gauge(name, doc, labelnames=list(labels), multiprocess_mode="mostrecent")


class MonitorMetrics:
    """The live monitoring's test of the traffic (``serving.monitoring``)."""

    def __init__(self) -> None:
        prom = _prom()
        self.p_value = _latest(
            "tagserve_drift_p_value", "Drift test p-value (KS or chi2)", "feature"
        )
        self.statistic = _latest(
            "tagserve_drift_statistic", "Drift test statistic (KS D or chi2)", "feature"
        )
        self.detected = _latest(
            "tagserve_drift_detected", "1 if drift is detected after correction", "feature"
        )
        self.missing = _latest(
            "tagserve_input_missing_ratio", "Share of window rows missing it", "feature"
        )
        self.unknown = _latest(
            "tagserve_input_unknown_category_ratio",
            "Share of its values in the window never seen in the reference",
            "feature",
        )
        self.out_of_range = _latest(
            "tagserve_input_out_of_range_ratio",
            "Share of its values in the window outside the reference's [min, max]",
            "feature",
        )
        self.prediction_p = _latest(
            "tagserve_prediction_drift_p_value", "Prediction drift test p-value"
        )
        self.prediction_statistic = _latest(
            "tagserve_prediction_drift_statistic", "Prediction drift test statistic"
        )
        self.prediction_detected = _latest(
            "tagserve_prediction_drift_detected", "1 if the predictions drifted"
        )
        self.candidate_prediction_p = _latest(
            "tagserve_candidate_prediction_drift_p_value",
            "Drift test p-value of the canary candidate's answers (alone, not corrected)",
        )
        self.candidate_prediction_detected = _latest(
            "tagserve_candidate_prediction_drift_detected",
            "1 if the canary candidate's answers drifted (p-value below alpha)",
        )
        self.rows = _latest("tagserve_monitor_window_rows", "Rows in the last tested window")
        self.evaluated = _latest(
            "tagserve_monitor_last_evaluation_timestamp_seconds",
            "When the window was last tested (Unix time)",
        )
        self.dropped = prom.Counter(
            "tagserve_monitor_dropped_rows",
            "Rows not monitored because the monitoring queue was full",
        )


@cache
def shedding_metrics() -> SheddingMetrics:
    return SheddingMetrics()


@cache
def arrival_metrics() -> ArrivalMetrics:
    return ArrivalMetrics()


def shadow_metrics(task: str) -> ShadowMetrics:
    """The shadow's metrics for a live model of ``task`` (one task per service)."""
    return ShadowMetrics(task)


@cache
def monitor_metrics() -> MonitorMetrics:
    return MonitorMetrics()
