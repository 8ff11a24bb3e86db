"""Models for the monitoring tests: made the way the pipeline makes them, with the drift
reference the pipeline leaves in the store (``clean_data`` aliased ``reference``) and the test
data evaluation records on the model (``test_data``), so the importer finds both.

The data: the shipped diamonds with a few values of ``depth`` and ``color`` missing (so those
signature columns are optional, and a request may send them empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.helpers.factories import bentoml_home
from tests.helpers.service_models import PROJECT_ROOT, import_prod, train_and_log

MONITORED_NAME = "tagserve-monitored"
PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"  # the shipped config and rules
TRAIN_ROWS, TEST_ROWS = 20_000, 1_000
MISSING_SHARE = 0.03
FEATURES = ["carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z"]
NUMBERS = ["carat", "depth", "table", "x", "y", "z"]


def diamonds_with_gaps(seed: int = 0) -> pd.DataFrame:
    """The shipped diamonds, with ``MISSING_SHARE`` of ``depth`` and ``color`` missing."""
    frame = pd.read_parquet(PROJECT_ROOT / "data" / "diamonds.parquet")
    rng = np.random.default_rng(seed)
    for column in ("depth", "color"):
        frame.loc[rng.random(len(frame)) < MISSING_SHARE, column] = None
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class MonitoredModel:
    tag: str  # BentoML tag
    bentoml_home: Path
    tagserve_home: Path
    train: pd.DataFrame  # the rows the model was trained on (with the target)


def log_reference(tagserve_home: Path, project: str, frame: pd.DataFrame, name: str) -> Any:
    """Log ``frame`` as the next version of ``name`` (a one-file Parquet data set)."""
    from artifacts.store import LocalArtifactStore

    folder = tagserve_home / "data" / f"{project}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"{name}.parquet", index=False)
    store = LocalArtifactStore(tagserve_home / "store" / project)
    return store.log_artifact(folder, name, "dataset", {"rows": len(frame)}, run_id="test")


def monitored_model(
    tagserve_home: Path, home: Path, project: str = MONITORED_NAME
) -> MonitoredModel:
    """A diamonds regressor with a drift reference (all the data, as check_data sets it) and
    test data, logged to ``project`` and imported into the BentoML ``home``."""
    from artifacts.store import LocalArtifactStore

    data = diamonds_with_gaps()
    shuffled = data.sample(frac=1.0, random_state=1).reset_index(drop=True)
    train, test = shuffled.iloc[:TRAIN_ROWS], shuffled.iloc[TRAIN_ROWS : TRAIN_ROWS + TEST_ROWS]
    version = train_and_log(tagserve_home, project, classifier=False, frame=train)
    store = LocalArtifactStore(tagserve_home / "store" / project)
    reference = log_reference(tagserve_home, project, data, "clean_data")
    store.set_alias(reference.qualified_name, "reference")
    test_version = log_reference(tagserve_home, project, test, "test_data")
    store.update_metadata(
        f"model_export:{version}",
        {"test_data": {"ref": test_version.qualified_name, "digest": test_version.digest}},
    )
    with bentoml_home(home):
        tag = import_prod(project, home=tagserve_home, name=project)
    return MonitoredModel(tag, home, tagserve_home, train)


def as_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON records of the model's features (missing values as null)."""
    out = []
    for row in frame[FEATURES].to_dict("records"):
        out.append(
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        )
    return out


def replay(url: str, records: list[dict[str, Any]], *, batch: int = 100, clients: int = 4) -> float:
    """POST ``records`` to ``/predict_batch`` in batches, from ``clients`` connections (so
    every worker gets some); every answer must be 200. Returns when the first was sent."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    started = time.time()
    chunks = [records[i : i + batch] for i in range(0, len(records), batch)]
    http = [httpx.Client(base_url=url, timeout=60) for _ in range(clients)]

    def send(i: int) -> None:
        answer = http[i % clients].post("/predict_batch", json=chunks[i])
        assert answer.status_code == 200, answer.text

    try:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, range(len(chunks))))
    finally:
        for client in http:
            client.close()
    return started


def window_since(url: str, since: float, rows: int, timeout: float = 60) -> dict[str, Any]:
    """``GET /monitoring`` once it answers for a window of ``rows`` rows all sent after
    ``since`` (Unix time)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/monitoring", timeout=10).json()
        window = status.get("window") or {}
        if (
            window.get("rows", 0) >= rows
            and (window.get("oldest_unix") or 0) >= since
            and status.get("tested")
        ):
            return status
        time.sleep(0.3)
    raise AssertionError(f"no window of {rows} rows sent after {since} in {timeout} s: {status}")


def scipy_p_values(sample: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """Each feature's drift p-value of ``sample`` against ``reference`` computed with scipy
    directly, apart from ``inference.drift``: the two-sample Kolmogorov-Smirnov test of the
    numbers present, the chi-square test of homogeneity of the category counts."""
    from scipy import stats

    p_values = {}
    for name in FEATURES:
        ours, theirs = sample[name].dropna(), reference[name].dropna()
        if name in NUMBERS:
            p_values[name] = float(
                stats.ks_2samp(ours.to_numpy(float), theirs.to_numpy(float)).pvalue
            )
        else:
            counts = pd.concat(
                [ours.astype(str).value_counts(), theirs.astype(str).value_counts()], axis=1
            )
            p_values[name] = float(stats.chi2_contingency(counts.fillna(0).to_numpy()).pvalue)
    return p_values
