"""Settings read from the environment (TAGSERVE_*): their values, and one clear error for a bad
one."""

from __future__ import annotations

import pytest

from serving.settings import Settings


def test_settings_of_the_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSERVE_CANDIDATE", "m:v1")
    monkeypatch.setenv("TAGSERVE_SHADOW_FRACTION", "0.25")
    monkeypatch.setenv("TAGSERVE_CANARY_PERCENT", "5")
    monkeypatch.setenv("TAGSERVE_DRAIN_SECONDS", "7")
    s = Settings.from_env()
    assert (s.candidate, s.shadow_fraction, s.canary_percent, s.drain_seconds) == (
        "m:v1",
        0.25,
        5,
        7,
    )
    assert Settings.from_env({"candidate": "m:v2"}).candidate == "m:v2"  # the bento's wins
    for name, value in (("TAGSERVE_SHADOW_FRACTION", "1.5"), ("TAGSERVE_CANARY_PERCENT", "nan")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=f"{name} must be from 0 to"):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSERVE_PREDICT_QUEUE", "7")
    monkeypatch.setenv("TAGSERVE_RETRY_AFTER", "3")
    settings = Settings.from_env()
    assert (settings.predict_budget, settings.retry_after_s) == (8, 3)
    assert settings.limits()["predict_budget_per_worker"] == 8
    monkeypatch.setenv("TAGSERVE_PREDICT_QUEUE", "0")
    assert Settings.from_env().predict_budget == 1  # one computing, none waiting
    monkeypatch.setenv("TAGSERVE_PREDICT_QUEUE", "-1")
    with pytest.raises(ValueError, match="TAGSERVE_PREDICT_QUEUE must be at least 0, not -1"):
        Settings.from_env()
    monkeypatch.setenv("TAGSERVE_PREDICT_QUEUE", "2")
    monkeypatch.setenv("TAGSERVE_RETRY_AFTER", "soon")
    with pytest.raises(ValueError, match="TAGSERVE_RETRY_AFTER must be a whole number"):
        Settings.from_env()


def test_monitoring_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.settings import Settings

    defaults = Settings.from_env()
    assert (defaults.monitor, defaults.monitor_every_s, defaults.monitor_window) == (
        True,
        30.0,
        5_000,
    )
    monkeypatch.setenv("TAGSERVE_MONITOR", "off")
    monkeypatch.setenv("TAGSERVE_MONITOR_EVERY", "0.5")
    monkeypatch.setenv("TAGSERVE_MONITOR_WINDOW", "2000")
    monkeypatch.setenv("TAGSERVE_MONITOR_DIR", "/tmp/shared")
    got = Settings.from_env()
    assert (got.monitor, got.monitor_every_s, got.monitor_window, got.monitor_dir) == (
        False,
        0.5,
        2_000,
        "/tmp/shared",
    )
    for name, bad, why in (
        ("TAGSERVE_MONITOR", "sometimes", "must be on or off"),
        ("TAGSERVE_MONITOR_EVERY", "0", "must be more than 0 seconds"),
        ("TAGSERVE_MONITOR_EVERY", "soon", "must be a number of seconds"),
        ("TAGSERVE_MONITOR_WINDOW", "0", "must be at least 1"),
    ):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=f"{name} {why}"):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_a_worker_batches_with_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled model (the fast path, outside the GIL) gets a call per core of the worker's
    share; a model scikit-learn serves one call; TAGSERVE_BATCH_CALLS wins over both."""
    from inference.envvars import usable_cores

    cores = usable_cores()
    monkeypatch.setenv("TAGSERVE_WORKERS", "1")
    assert Settings.from_env().batch_calls == 0  # chosen by the model's engine
    assert Settings.from_env().for_engine(compiled=True).batch_calls == cores
    assert Settings.from_env().for_engine(compiled=False).batch_calls == 1
    monkeypatch.setenv("TAGSERVE_WORKERS", str(cores + 1))
    assert Settings.from_env().for_engine(compiled=True).batch_calls == 1  # never none
    monkeypatch.setenv("TAGSERVE_BATCH_CALLS", "3")
    settings = Settings.from_env().for_engine(compiled=False)
    assert settings.batch_calls == 3 and settings.limits()["batch_calls_per_worker"] == 3
    monkeypatch.setenv("TAGSERVE_BATCH_CALLS", "-1")
    with pytest.raises(ValueError, match="TAGSERVE_BATCH_CALLS must be at least 0, not -1"):
        Settings.from_env()
