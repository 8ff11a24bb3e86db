"""The drift reference at import: computed from the model's ``clean_data:reference`` and its
test data, saved in the BentoML model; a model imported without one says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from importers.reference import drift_settings
from inference import drift
from tests.helpers.factories import bentoml_home
from tests.helpers.monitoring import FEATURES, MonitoredModel, diamonds_with_gaps


def model_folder(monitored: MonitoredModel, tag: str | None = None) -> Path:
    name, version = (tag or monitored.tag).split(":")
    return monitored.bentoml_home / "models" / name / version


def metadata(folder: Path) -> dict:
    return yaml.safe_load((folder / "model.yaml").read_text())["metadata"]


def test_the_reference_is_the_reference_data_in_compact_exact_form(
    monitored: MonitoredModel,
) -> None:
    folder = model_folder(monitored)
    saved = folder / drift.MONITORING_FOLDER
    reference = drift.Reference.load(saved)
    data = diamonds_with_gaps()  # what the test logged as clean_data:reference
    assert list(reference.features) == [c for c in reference.features if c in FEATURES]
    assert set(reference.features) == set(FEATURES)
    for name, dist in reference.features.items():
        assert dist.rows == len(data)
        assert dist.missing == pytest.approx(data[name].isna().mean(), abs=1e-15)
        if dist.kind == drift.NUMBER:
            assert np.array_equal(dist.sample(), np.sort(data[name].dropna().to_numpy()))
        else:
            counts = data[name].dropna().astype(str).value_counts()
            assert dist.categories == {k: int(v) for k, v in counts.items()}
    assert reference.prediction is not None and reference.prediction.kind == drift.NUMBER
    assert reference.prediction.rows == 1_000  # the model's test data
    assert (reference.alpha, reference.correction) == (0.05, "bonferroni")
    assert reference.source == "local:tagserve-monitored/clean_data:v0"
    recorded = metadata(folder)["monitoring"]
    assert recorded["monitored"] is True and recorded["predictions_on"] == "test_data"
    assert recorded["bytes"] == drift.reference_size(saved) < 50_000  # 53,940 rows
    assert not list(saved.glob("*.pkl"))


def test_a_model_without_reference_data_is_imported_unmonitored(
    monitored: MonitoredModel,
) -> None:
    """A folder source has no artifact store, hence no reference: the metadata says why."""
    from importers import import_model

    mlflow = model_folder(monitored) / "mlflow_model"
    with bentoml_home(monitored.bentoml_home):
        tag = import_model(f"dir:{mlflow}", name="tagserve-unmonitored").tag
    folder = model_folder(monitored, tag)
    assert not (folder / drift.MONITORING_FOLDER).exists()
    assert metadata(folder)["monitoring"] == {
        "monitored": False,
        "reason": "no drift reference: the source is not an artifact store",
    }


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, ("clean_data:reference", 0.05, "bonferroni")),
        (
            {
                "checks": {
                    "drift": {"reference": "clean_data:v3", "alpha": 0.01, "correction": "holm"}
                }
            },
            ("clean_data:v3", 0.01, "holm"),
        ),
        (
            {"checks": {"drift": {"alpha": "often", "correction": "fdr"}}},
            ("clean_data:reference", 0.05, "bonferroni"),
        ),
    ],
)
def test_check_data_settings_come_from_the_training_config(config, expected) -> None:
    assert drift_settings({"config": config} if config else {}) == expected


def test_the_reference_data_must_fit_the_model(tmp_path: Path) -> None:
    """A reference lacking a model column is no reference (not a crash)."""
    from types import SimpleNamespace

    from importers.reference import build_reference
    from inference.contract import contract_from_signature

    path = tmp_path / "reference.parquet"
    pd.DataFrame({"carat": [0.3, 0.4]}).to_parquet(path)
    source = SimpleNamespace(metadata={}, fetch_reference=lambda _s, _r: (path, "local:p/x:v0"))
    contract = contract_from_signature([{"type": "double", "name": "depth", "required": True}])
    verified = SimpleNamespace(facts=SimpleNamespace(contract=contract), task="regression")
    folder, report = build_reference(source, verified, None, tmp_path)  # type: ignore[arg-type]
    assert folder is None and report["monitored"] is False
    assert "does not fit the model" in report["reason"] and "depth" in report["reason"]


@pytest.mark.parametrize("has_reference", [True, False])
def test_a_wandb_model_takes_its_reference_from_its_project(
    monitored: MonitoredModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_reference: bool
) -> None:
    """W&B (the one allowed double): ``clean_data:reference`` of the model's own project, or
    unmonitored with the reason when it cannot be fetched."""
    import wandb

    from artifacts.store import LocalArtifactStore
    from importers import import_model
    from tests.helpers.importer_models import FakeWandbArtifact, fake_wandb_api

    def artifact(files: Path, name: str, version: str, aliases: list[str]) -> FakeWandbArtifact:
        found = FakeWandbArtifact(
            files, entity="team", project="p", version=version, aliases=aliases, metadata={}
        )
        found.name, found.qualified_name = f"{name}:{version}", f"team/p/{name}:{version}"
        return found

    store = monitored.tagserve_home / "store" / "tagserve-monitored"
    model = artifact(model_folder(monitored) / "mlflow_model", "model_export", "v0", ["prod"])
    artifacts = {"team/p/model_export:prod": model}
    if has_reference:
        reference_files = LocalArtifactStore(store).get("clean_data:reference").path
        artifacts["team/p/clean_data:reference"] = artifact(
            reference_files, "clean_data", "v0", ["reference"]
        )
    monkeypatch.setattr(wandb, "Api", fake_wandb_api(artifacts))
    with bentoml_home(tmp_path / "bentoml"):
        tag = import_model("wandb:team/p/model_export:prod", name="tagserve-wandb").tag
    name, version = tag.split(":")
    folder = tmp_path / "bentoml" / "models" / name / version
    recorded = metadata(folder)["monitoring"]
    if has_reference:
        assert recorded["monitored"] is True
        assert recorded["source"] == "wandb:team/p/clean_data:v0"
        assert drift.Reference.load(folder / drift.MONITORING_FOLDER).features["carat"].rows
    else:
        assert recorded["monitored"] is False
        assert "team/p/clean_data:reference could not be fetched from W&B" in recorded["reason"]


def test_a_classifier_with_gaps_gets_label_counts_and_null_rates(tmp_path: Path) -> None:
    """Another shape: penguins (a classifier; an integer column; text with missing values)."""
    from artifacts.store import LocalArtifactStore
    from importers import import_model
    from tests.helpers.monitoring import log_reference
    from tests.helpers.service_models import penguins, train_and_log

    project = "tagserve-penguins"
    train_and_log(tmp_path, project, classifier=True)
    frame = penguins()
    reference = log_reference(tmp_path, project, frame, "clean_data")
    LocalArtifactStore(tmp_path / "store" / project).set_alias(
        reference.qualified_name, "reference"
    )
    with bentoml_home(tmp_path / "bentoml"):
        tag = import_model(f"local:{project}/model_export:prod", name=project, home=tmp_path).tag
    name, version = tag.split(":")
    folder = tmp_path / "bentoml" / "models" / name / version
    loaded = drift.Reference.load(folder / drift.MONITORING_FOLDER)
    assert loaded.prediction is not None and loaded.prediction.kind == drift.CATEGORY
    assert set(loaded.prediction.categories) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert metadata(folder)["monitoring"]["predictions_on"] == "reference"  # no test_data
    assert loaded.features["year"].kind == drift.NUMBER
    assert loaded.features["sex"].kind == drift.CATEGORY
    assert loaded.features["sex"].missing == pytest.approx(frame["sex"].isna().mean())
    window = drift.frame_columns(frame.sample(200, random_state=0), list(loaded.features))
    got = drift.evaluate(loaded, window)
    assert got["drifted"] == [] and got["features"]["sex"]["missing_ratio"] > 0


def test_the_reference_counts_every_category_of_the_model_domain(
    monitored: MonitoredModel,
) -> None:
    """One source: the categories the contract takes (the fitted Pipeline's, recorded as the
    model's domain) are exactly those the drift reference counts, so monitoring's "unknown"
    categories are the ones the service refuses unless TAGSERVE_UNKNOWN_CATEGORIES=accept."""
    folder = model_folder(monitored)
    reference = drift.Reference.load(folder / drift.MONITORING_FOLDER)
    domain = metadata(folder)["domain"]
    assert domain["cut"]["categories"] == ["Fair", "Good", "Very Good", "Premium", "Ideal"]
    for column in ("cut", "color", "clarity"):
        assert set(reference.features[column].categories) == set(domain[column]["categories"])
    assert domain["carat"] == {"minimum": 0.1, "maximum": 6.0}  # the shipped checks' range


def test_a_category_neither_side_holds_does_not_break_the_test() -> None:
    """The reference lists every category of the domain, seen or not: a category with no
    count on either side is left out of the chi-square table."""
    with_zero = drift.chi2_test({"a": 10, "b": 5}, {"a": 9, "b": 6, "never": 0})
    assert with_zero == drift.chi2_test({"a": 10, "b": 5}, {"a": 9, "b": 6})
    assert drift.chi2_test({"a": 3}, {"a": 2, "never": 0}).p_value == 1.0
