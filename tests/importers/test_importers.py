"""The importer, in-process: real models (pipeline train/export on tiny data), real local
store and folders, real BentoML store (one per test); only W&B's network API is faked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bentoml
import numpy as np
import pytest
import wandb
import yaml

import importers
from artifacts.store import LocalArtifactStore, directory_digest
from importers import bento_store
from importers.errors import ModelImportError, ModelRejected, SourceError
from inference.loading import load_pipeline
from tests.helpers.importer_models import (
    ARTIFACT_METADATA,
    CONFIG_DIR,
    TEST_METADATA,
    FakeWandbArtifact,
    bentoml_home,
    fake_wandb_api,
    log_prod,
    train_export,
    writable_copy,
)

# BentoML's ignore-file parsing warns about a pathspec deprecation on every store access.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec.*")

# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def regressor(tmp_path_factory) -> Path:
    """One real exported regressor for the session; tests copy it, never edit it."""
    return train_export(tmp_path_factory.mktemp("models") / "regressor")


@pytest.fixture(scope="session")
def other_regressor(tmp_path_factory) -> Path:
    """A different model (another seed): another digest."""
    return train_export(tmp_path_factory.mktemp("models") / "other", seed=1)


@pytest.fixture(scope="session")
def classifier(tmp_path_factory) -> Path:
    return train_export(tmp_path_factory.mktemp("models") / "classifier", classifier=True)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own BENTOML_HOME and TAGSERVE_HOME, and no W&B settings."""
    for var in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TAGSERVE_HOME", str(tmp_path / "tagserve"))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    with bentoml_home(tmp_path / "bentoml") as home:
        yield home


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "tagserve"


@pytest.fixture
def prod(home, regressor):
    """``model_export:v0`` aliased ``prod`` in the default project's local store."""
    return log_prod(home / "store" / "tagserve-diamonds", regressor)


def tags() -> list[str]:
    return sorted(str(m.tag) for m in bentoml.models.list())


def staging_leftovers(bentoml_dir: Path) -> list[str]:
    root = bentoml_dir / bento_store.STAGING_DIRNAME
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


# -- local store -----------------------------------------------------------------------------


def test_default_name_is_the_pipeline_project():
    config = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    assert importers.DEFAULT_MODEL_NAME == config["main"]["project"] == "tagserve-diamonds"


def test_imports_prod_from_the_local_store_with_lineage(prod, isolated):
    result = importers.import_model()  # the default: model_export:prod under TAGSERVE_HOME

    assert result.created and result.source == "local" and result.version == "v0"
    assert result.digest == prod.digest == directory_digest(prod.path)
    assert result.tag == f"tagserve-diamonds:v0-{prod.digest[:12]}"
    assert result.source_ref == "local:tagserve-diamonds/model_export:prod"
    assert result.line() == (
        f"imported {result.tag} from local:tagserve-diamonds/model_export:prod "
        f"(digest {prod.digest})"
    )
    assert tags() == [result.tag]
    assert Path(result.path).parent.parent == isolated / "models"

    model = bentoml.models.get(result.tag)
    assert model.info.module == "bentoml.mlflow"
    assert model.info.labels == {"stage": "prod", "source": "local", "artifact_version": "v0"}
    meta = model.info.metadata
    json.dumps(meta)  # JSON-serializable, as the service expects
    assert meta["artifact"] == "model_export:v0"
    assert meta["source_ref"] == result.source_ref
    assert (meta["version"], meta["digest"]) == ("v0", prod.digest)
    assert meta["aliases"] == ["latest", "prod"]
    assert meta["run_id"] == ARTIFACT_METADATA["run_id"]
    assert meta["git_commit"] == ARTIFACT_METADATA["git_commit"]
    assert meta["metrics"] == {
        "val": ARTIFACT_METADATA["val_metrics"],
        "test": TEST_METADATA["test_metrics"],
    }
    assert meta["lineage"] == {
        **ARTIFACT_METADATA["lineage"],
        "test_data": TEST_METADATA["test_data"],
    }
    assert (meta["task"], meta["target"]) == ("regression", "price")
    assert meta.get("classes") is None
    assert [c["name"] for c in meta["signature"]["inputs"]] == meta["feature_columns"]
    assert meta["signature"]["outputs"][0]["type"] == "tensor"
    assert "scikit-learn==" + __import__("sklearn").__version__ in meta["requirements"]

    # The service's path: the MLflow files inside the BentoML model, loaded by the pipeline.
    mlflow_dir = Path(bentoml.mlflow.get(result.tag).path_of("mlflow_model"))
    assert directory_digest(mlflow_dir) == prod.digest
    example = json.loads((mlflow_dir / "input_example.json").read_text())
    rows = __import__("pandas").DataFrame(example["data"], columns=example["columns"])
    np.testing.assert_allclose(
        load_pipeline(mlflow_dir).predict(rows), load_pipeline(prod.path).predict(rows)
    )
    assert importers.model_requirements(result.tag) == meta["requirements"]
    assert importers.model_requirements(model) == meta["requirements"]
    assert importers.model_requirements("tagserve-diamonds") == meta["requirements"]  # latest
    assert staging_leftovers(isolated) == []


def test_local_refs_by_version_project_and_home(tmp_path, regressor, monkeypatch):
    other_home = tmp_path / "elsewhere"
    log_prod(other_home / "store" / "tagserve-penguins", regressor)
    monkeypatch.delenv("TAGSERVE_HOME")

    by_version = importers.import_model(
        "local:model_export:v0", home=other_home, project="tagserve-penguins", name="penguins"
    )
    assert by_version.tag.startswith("penguins:v0-")
    assert by_version.source_ref == "local:tagserve-penguins/model_export:v0"
    # vN of a version that holds prod is labelled prod all the same.
    assert bentoml.models.get(by_version.tag).info.labels["stage"] == "prod"
    named = importers.import_model(
        "tagserve-penguins/model_export:prod", home=other_home, name="penguins"
    )
    assert (named.tag, named.created) == (by_version.tag, False)


def test_import_is_idempotent(prod):
    first = importers.import_model()
    before = bentoml.models.list()
    second = importers.import_model()

    assert (second.tag, second.created, second.digest) == (first.tag, False, first.digest)
    assert second.line().startswith(f"already imported {first.tag} from ")
    assert len(bentoml.models.list()) == len(before) == 1


def test_different_artifacts_never_share_a_tag(prod, home, other_regressor):
    first = importers.import_model()
    v1 = log_prod(home / "store" / "tagserve-diamonds", other_regressor)
    second = importers.import_model()

    assert v1.version == "v1" and second.created
    assert second.tag == f"tagserve-diamonds:v1-{v1.digest[:12]}" != first.tag
    assert tags() == sorted([first.tag, second.tag])
    assert str(bentoml.models.get("tagserve-diamonds").tag) == second.tag  # latest moved
    # Back to the old prod: its tag again, no third model.
    LocalArtifactStore(home / "store" / "tagserve-diamonds").set_alias("model_export:v0", "prod")
    again = importers.import_model()
    assert (again.tag, again.created, len(tags())) == (first.tag, False, 2)


def stages() -> dict[str, str]:
    """Each stored model's ``stage`` label, as BentoML reads it from the store."""
    return {str(m.tag): m.info.labels.get("stage") for m in bentoml.models.list()}


def test_the_stage_label_follows_prod_through_a_rollback(prod, home, other_regressor):
    """Import v0, v1, roll prod back to v0 and import again ("already imported"): v0 is the
    one model labelled stage=prod, `latest` and the prod resolution name it, v1 is archived."""
    from inference.bento import prod_model

    first = importers.import_model()
    log_prod(home / "store" / "tagserve-diamonds", other_regressor)
    second = importers.import_model()
    assert stages() == {first.tag: "archived", second.tag: "prod"}
    assert str(prod_model("tagserve-diamonds").tag) == second.tag

    LocalArtifactStore(home / "store" / "tagserve-diamonds").set_alias("model_export:v0", "prod")
    again = importers.import_model()
    assert (again.tag, again.created) == (first.tag, False)
    assert stages() == {first.tag: "prod", second.tag: "archived"}
    assert str(bentoml.models.get("tagserve-diamonds:latest").tag) == first.tag
    assert str(prod_model("tagserve-diamonds").tag) == first.tag
    # The relabelled model is still a whole, loadable BentoML model with its lineage.
    assert bentoml.models.get(second.tag).info.metadata["digest"] == second.digest


def test_a_non_prod_import_takes_neither_the_prod_label_nor_latest(prod, home, other_regressor):
    from inference.bento import prod_model

    first = importers.import_model()
    store = LocalArtifactStore(home / "store" / "tagserve-diamonds")
    store.log_artifact(other_regressor, "model_export", "model_export", ARTIFACT_METADATA)
    other = importers.import_model("model_export:v1")
    assert stages() == {first.tag: "prod", other.tag: "none"}
    assert str(bentoml.models.get("tagserve-diamonds:latest").tag) == first.tag
    assert str(prod_model("tagserve-diamonds").tag) == first.tag


def test_no_prod_model_is_named_clearly(regressor, home):
    from inference.bento import prod_model
    from inference.errors import TagserveError

    store = LocalArtifactStore(home / "store" / "tagserve-diamonds")
    store.log_artifact(regressor, "model_export", "model_export", ARTIFACT_METADATA)
    importers.import_model("model_export:v0")
    with pytest.raises(TagserveError, match=r"no model 'tagserve-diamonds' labelled stage=prod"):
        prod_model("tagserve-diamonds")


def test_unknown_alias_names_what_exists(prod):
    with pytest.raises(
        SourceError,
        match=r"unknown artifact or alias model_export:staging .*"
        r"versions: v0; aliases: latest, prod",
    ):
        importers.import_model("model_export:staging")
    with pytest.raises(SourceError, match=r"unknown artifact or alias model_exprot:prod"):
        importers.import_model("model_exprot:prod")
    assert tags() == []


def test_missing_local_store_says_how_to_make_one(tmp_path):
    with pytest.raises(SourceError, match=r"no local artifact store at .*make demo"):
        importers.import_model(home=tmp_path / "empty")
    assert not (tmp_path / "empty").exists()  # looking did not create a store


def test_a_corrupt_artifact_is_caught_by_its_digest(prod, isolated):
    model_file = prod.path / "model.skops"
    model_file.chmod(0o644)
    model_file.write_bytes(model_file.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(
        ModelImportError, match=r"corrupt artifact model_export:v0: its files' digest"
    ):
        importers.import_model()
    assert tags() == [] and staging_leftovers(isolated) == []


# -- folders ---------------------------------------------------------------------------------


def test_imports_a_folder(regressor, tmp_path):
    folder = writable_copy(regressor, tmp_path / "model")  # as `wandb artifact get --root model`
    digest = directory_digest(folder)

    result = importers.import_model(str(folder))
    assert result.tag == f"tagserve-diamonds:dir-{digest[:12]}"
    assert (result.created, result.source, result.version) == (True, "dir", None)
    assert result.source_ref == f"dir:{folder.resolve()}"
    model = bentoml.models.get(result.tag)
    assert model.info.labels == {"stage": "prod", "source": "dir"}
    assert model.info.metadata["digest"] == digest
    assert model.info.metadata["target"] == "price"  # from MLmodel, no artifact metadata
    assert "version" not in model.info.metadata  # unknown: left out (BentoML refuses None)
    # What /metadata and `bentoml models get` show: the folder's name and digest, never the
    # absolute path of the machine that imported it.
    assert model.info.metadata["source_ref"] == f"dir:model@{digest[:12]}"
    assert str(tmp_path) not in json.dumps(model.info.metadata)

    same = importers.import_model(f"dir:{folder}")
    assert (same.tag, same.created) == (result.tag, False)


def test_same_files_from_store_and_folder_share_the_digest(prod, tmp_path):
    from_store = importers.import_model()
    from_dir = importers.import_model(str(writable_copy(prod.path, tmp_path / "model")))
    assert from_store.digest == from_dir.digest
    assert from_dir.tag.endswith(f":dir-{prod.digest[:12]}")


def test_classifier_records_task_and_classes(classifier, tmp_path):
    result = importers.import_model(str(writable_copy(classifier, tmp_path / "model")))
    meta = bentoml.models.get(result.tag).info.metadata
    assert (meta["task"], meta["classes"], meta["target"]) == (
        "classification",
        ["big", "small"],
        "size",
    )


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        importers.import_model(str(tmp_path / "nope" / "model"))
    with pytest.raises(SourceError, match="no such folder"):
        importers.import_model(f"dir:{tmp_path / 'nope'}")


def test_invalid_model_name(prod):
    with pytest.raises(ModelImportError, match="invalid model name 'Bad Name!'"):
        importers.import_model(name="Bad Name!")


# -- bad models ------------------------------------------------------------------------------


def _edit_mlmodel(folder: Path, edit) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    edit(mlmodel)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


BAD_MODELS = {
    "no MLmodel": (
        lambda f: (f / "MLmodel").unlink(),
        r"not an MLflow model: no MLmodel file in",
    ),
    "corrupt MLmodel": (
        lambda f: (f / "MLmodel").write_text("flavors: [unclosed\n"),
        r"corrupt MLmodel file in",
    ),
    "no sklearn flavor": (
        lambda f: _edit_mlmodel(f, lambda m: m["flavors"].pop("sklearn")),
        r"not a scikit-learn MLflow model: MLmodel lacks the sklearn flavor "
        r"\(it has: python_function\)",
    ),
    "no signature": (
        lambda f: _edit_mlmodel(f, lambda m: m.pop("signature")),
        r"the model has no signature",
    ),
    "pickled": (
        lambda f: _edit_mlmodel(
            f, lambda m: m["flavors"]["sklearn"].update(serialization_format="cloudpickle")
        ),
        r"serialized with 'cloudpickle', not skops",
    ),
    "model file missing": (
        lambda f: (f / "model.skops").unlink(),
        r"the model file model.skops named by MLmodel is missing",
    ),
    "corrupt model file": (
        lambda f: (f / "model.skops").write_bytes(b"not a zip archive"),
        r"cannot load the model from model.skops: BadZipFile",
    ),
    "no requirements.txt": (
        lambda f: (f / "requirements.txt").unlink(),
        r"no requirements.txt",
    ),
    "no input example": (
        lambda f: _edit_mlmodel(f, lambda m: m.pop("saved_input_example_info")),
        r"no input example",
    ),
    "predictions differ": (
        lambda f: _edit_mlmodel(
            f, lambda m: m["metadata"].update(example_predictions=[1.0, 2.0, 3.0])
        ),
        r"predictions of its input example do not match those recorded at export: got \[.*\], "
        r"expected \[1, 2, 3\]",
    ),
}


@pytest.mark.parametrize("problem", list(BAD_MODELS))
def test_bad_models_never_enter_the_store(problem, regressor, tmp_path, isolated):
    folder = writable_copy(regressor, tmp_path / "model")
    damage, message = BAD_MODELS[problem]
    damage(folder)

    with pytest.raises(ModelRejected, match=message):
        importers.import_model(str(folder))
    assert tags() == []
    assert staging_leftovers(isolated) == []


# -- W&B -------------------------------------------------------------------------------------


def test_imports_from_wandb_through_the_api(prod, monkeypatch):
    files = prod.path
    artifact = FakeWandbArtifact(
        files,
        entity="team",
        project="tagserve-diamonds",
        version="v3",
        aliases=["latest", "prod"],
        metadata={**prod.metadata, "unset": None},
    )
    api = fake_wandb_api({"team/tagserve-diamonds/model_export:prod": artifact})
    monkeypatch.setattr(wandb, "Api", api)

    result = importers.import_model("wandb:team/tagserve-diamonds/model_export:prod")
    digest = directory_digest(files)
    assert result.tag == f"tagserve-diamonds:v3-{digest[:12]}"
    assert (result.created, result.source, result.digest) == (True, "wandb", digest)
    assert result.source_ref == "wandb:team/tagserve-diamonds/model_export:prod"
    model = bentoml.models.get(result.tag)
    assert model.info.labels == {"stage": "prod", "source": "wandb", "artifact_version": "v3"}
    meta = model.info.metadata
    assert meta["artifact"] == "model_export:v3"
    assert meta["artifact_qualified_name"] == "team/tagserve-diamonds/model_export:v3"
    assert meta["wandb_digest"] == artifact.digest and meta["digest"] == digest
    assert meta["metrics"]["test"] == TEST_METADATA["test_metrics"]
    assert meta["run_id"] == ARTIFACT_METADATA["run_id"]
    # Downloaded into the import's scratch space, which is gone afterwards.
    assert len(artifact.downloads) == 1 and not Path(artifact.downloads[0]).exists()

    # Entity and project from the environment; the same artifact again: no duplicate.
    monkeypatch.setenv("WANDB_ENTITY", "team")
    monkeypatch.setenv("WANDB_PROJECT", "tagserve-diamonds")
    again = importers.import_model("wandb:model_export:prod")
    assert (again.tag, again.created) == (result.tag, False)
    assert api.requested[-1] == "team/tagserve-diamonds/model_export:prod"


def test_wandb_alias_becomes_the_stage_label(prod, monkeypatch):
    artifact = FakeWandbArtifact(
        prod.path, entity="team", project="p", version="v5", aliases=["staging"], metadata={}
    )
    monkeypatch.setattr(wandb, "Api", fake_wandb_api({"team/p/model_export:staging": artifact}))
    result = importers.import_model("wandb:team/p/model_export:staging")
    assert bentoml.models.get(result.tag).info.labels["stage"] == "staging"


def test_wandb_unknown_alias(monkeypatch):
    monkeypatch.setattr(wandb, "Api", fake_wandb_api({}))
    with pytest.raises(
        SourceError, match=r"unknown W&B artifact or alias team/p/model_export:nope"
    ):
        importers.import_model("wandb:team/p/model_export:nope")
    assert tags() == []


def test_wandb_without_credentials_uses_the_real_sdk(tmp_path, monkeypatch):
    # No fake here: the real wandb.Api() with no key anywhere (no env, no ~/.netrc).
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(
        SourceError, match=r"no W&B credentials: set WANDB_API_KEY or run `wandb login`"
    ):
        importers.import_model("wandb:team/tagserve-diamonds/model_export:prod")


def test_wandb_unreachable(monkeypatch):
    from wandb.errors import AuthenticationError

    # What the real SDK raises with a key but no network (measured on this machine).
    error = AuthenticationError(
        "Failed to verify credentials with https://api.wandb.ai: Failed to execute API "
        "request: the service process is busy and did not respond in time."
    )

    class OfflineApi:
        def __init__(self, *args, **kwargs):
            raise error

    monkeypatch.setattr(wandb, "Api", OfflineApi)
    with pytest.raises(
        SourceError, match=r"W&B did not accept the credentials or cannot be reached"
    ):
        importers.import_model("wandb:team/p/model_export:prod")


def test_wandb_download_failure(prod, monkeypatch):
    from wandb.errors import CommError

    class BrokenArtifact(FakeWandbArtifact):
        def download(self, root=None, **_):
            raise CommError("connection reset by peer")

    artifact = BrokenArtifact(
        prod.path, entity="t", project="p", version="v1", aliases=[], metadata={}
    )
    monkeypatch.setattr(wandb, "Api", fake_wandb_api({"t/p/model_export:prod": artifact}))
    with pytest.raises(SourceError, match=r"download of W&B artifact t/p/model_export:prod failed"):
        importers.import_model("wandb:t/p/model_export:prod")


# -- atomicity -------------------------------------------------------------------------------


def test_a_failure_inside_bentoml_save_leaves_the_store_unchanged(prod, isolated):
    from bentoml._internal.models.model import Model

    def disk_full(self):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Model, "flush", disk_full)
        with pytest.raises(
            ModelImportError,
            match=r"saving tagserve-diamonds:v0-\w+ into the BentoML store failed: OSError: "
            r"\[Errno 28\] No space left on device",
        ):
            importers.import_model()
    assert tags() == [] and staging_leftovers(isolated) == []
    assert not (isolated / "models" / "tagserve-diamonds").exists()
    # The disk has room again: the import goes through, into the real store.
    result = importers.import_model()
    assert result.created and tags() == [result.tag]


def test_a_failure_after_bentoml_saved_the_copy_leaves_the_store_unchanged(
    prod, monkeypatch, isolated
):
    from bentoml._internal.models.model import Model

    original = Model.save

    def save_then_fail(self, *args, **kwargs):
        original(self, *args, **kwargs)  # the whole model is written (to the staging store)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(Model, "save", save_then_fail)
    with pytest.raises(ModelImportError, match="RuntimeError: interrupted"):
        importers.import_model()
    assert tags() == [] and staging_leftovers(isolated) == []


def test_a_partial_folder_left_by_a_killed_plain_save_is_replaced(prod, isolated):
    tag_dir = isolated / "models" / "tagserve-diamonds" / f"v0-{prod.digest[:12]}"
    (tag_dir / "mlflow_model").mkdir(parents=True)
    (tag_dir / "mlflow_model" / "MLmodel").write_text("half")  # no model.yaml: unloadable

    result = importers.import_model()
    assert result.created and tags() == [result.tag]
    assert directory_digest(tag_dir / "mlflow_model") == prod.digest


def test_stale_workspaces_of_killed_imports_are_removed(prod, isolated):
    stale = isolated / bento_store.STAGING_DIRNAME / "0123abcd"
    (stale / "store" / "tagserve-diamonds").mkdir(parents=True)
    importers.import_model()
    assert not stale.exists() and staging_leftovers(isolated) == []


def test_a_tampered_stored_model_is_not_reported_as_imported(prod):
    result = importers.import_model()
    stored = Path(result.path) / "mlflow_model" / "MLmodel"
    stored.chmod(0o644)
    stored.write_text(stored.read_text() + "\n# edited\n")
    with pytest.raises(ModelImportError, match=r"exists but its files do not match the artifact"):
        importers.import_model()


def test_result_as_json(prod):
    data = importers.import_model().to_dict()
    assert data["status"] == "imported" and data["created"] is True
    assert set(data) >= {"tag", "created", "source_ref", "digest", "source", "version", "path"}
    json.dumps(data)


def test_the_store_files_are_the_verified_copy(prod, isolated):
    # bentoml.mlflow.import_model copies the files twice (download, then save); what lands
    # in the store must be byte-identical to the artifact.
    result = importers.import_model()
    stored = Path(result.path) / "mlflow_model"
    assert sorted(p.name for p in stored.iterdir()) == sorted(p.name for p in prod.path.iterdir())
    assert directory_digest(stored) == prod.digest
    shutil.rmtree(isolated / bento_store.STAGING_DIRNAME)  # scratch space is disposable
    assert importers.import_model().created is False


# -- MLflow URIs -----------------------------------------------------------------------------


def test_imports_an_mlflow_run_artifact(regressor, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(regressor), "model")
    uri = f"runs:/{run.info.run_id}/model"

    result = importers.import_model(uri)
    digest = directory_digest(regressor)
    assert result.tag == f"tagserve-diamonds:mlflow-{digest[:12]}"
    assert (result.created, result.source, result.source_ref) == (True, "mlflow", uri)
    model = bentoml.models.get(result.tag)
    assert model.info.labels == {"stage": "prod", "source": "mlflow"}
    assert model.info.metadata["run_id"] == run.info.run_id
    assert importers.import_model(uri).created is False
    with pytest.raises(SourceError, match=r"cannot fetch runs:/\w+/nope from MLflow"):
        importers.import_model(f"runs:/{run.info.run_id}/nope")


# -- the exact fast path -------------------------------------------------------------------


def test_the_fast_path_is_checked_on_the_test_data_and_saved(home, regressor, isolated, tmp_path):
    from inference import fastpath
    from inference.bento import fastpath_folder
    from inference.model import load_model
    from tests.helpers.factories import synthetic_diamonds

    store_root = home / "store" / "tagserve-diamonds"
    test = synthetic_diamonds(120, seed=5)
    test.to_parquet(tmp_path / "test_data.parquet")
    test_data = LocalArtifactStore(store_root).log_artifact(
        tmp_path / "test_data.parquet", "test_data", "test_data"
    )
    prod = log_prod(store_root, regressor)
    LocalArtifactStore(store_root).update_metadata(
        prod.qualified_name,
        {"test_data": {"ref": test_data.qualified_name, "digest": test_data.digest}},
    )

    result = importers.import_model()
    model = bentoml.models.get(result.tag)
    report = model.info.metadata["fast_path"]
    assert report["exact"] is True and report["engine"].startswith(fastpath.ENGINE_FAST)
    checked_on = dict(report["checked_on"])
    edge_rows = checked_on.pop("forest_edge_rows")
    assert checked_on == {"input_example": 3, "test_data": 120, "edge_cases": 123}
    assert edge_rows >= 10_000  # thresholds, NaN, subnormals... at the forest's input
    assert report["rows_checked"] == 2 * 123 + edge_rows and "reason" not in report
    saved = Path(result.path) / "fastpath"
    assert sorted(p.name for p in saved.iterdir()) == sorted(fastpath.FILES)
    assert fastpath_folder(model) == saved
    # What every consumer loads: the fast path, re-checked on the input example.
    loaded = load_model(Path(model.path_of("mlflow_model")), fast_folder=saved)
    assert loaded.fast is not None and loaded.fast_report["exact"]
    assert staging_leftovers(isolated) == []
    # Offline: the same, lazily (no sklearn), found in the store's files (no BentoML import).
    from inference.bento import find_in_store

    name = result.tag.split(":")[0]
    for tag in (result.tag, f"{name}:latest", name):
        found = find_in_store(tag)
        assert found is not None and found.tag == str(model.tag)
        assert found.info.metadata == dict(model.info.metadata)
        assert fastpath_folder(found) == saved
    assert find_in_store(f"{name}:{result.tag.split(':')[1][:4]}") is None  # prefix: BentoML's
    lazy = load_model(Path(model.path_of("mlflow_model")), fast_folder=saved, lazy=True)
    assert lazy.fast is not None and lazy.loaded_pipeline is None


def float32_regressor(dest: Path) -> Path:
    """A real model whose signature takes float32 numbers: sklearn imputes and scales them in
    float32, which the fast path does not reproduce."""
    from pipeline.train import export_model, fit
    from tests.helpers.factories import synthetic_diamonds
    from tests.helpers.importer_models import FEATURES, REGRESSOR

    frame = synthetic_diamonds(80)
    numbers = list(FEATURES["numeric"])
    frame[numbers] = frame[numbers].astype(np.float32)
    model, _, _, _ = fit(frame, "price", FEATURES, REGRESSOR, 0.25, 0)
    columns = [*FEATURES["numeric"], *FEATURES["categorical"], *FEATURES["ordinal"]]
    return export_model(model, dest, frame[columns], {"target": "price"})


def tfidf_regressor(dest: Path) -> Path:
    """A real model with a TF-IDF text column, which the fast path leaves to sklearn."""
    from pipeline.train import export_model, feature_columns, fit
    from tests.helpers.factories import synthetic_diamonds
    from tests.helpers.importer_models import FEATURES, REGRESSOR

    features = {**FEATURES, "text": "note", "tfidf_max_features": 5}
    frame = synthetic_diamonds(60).assign(note=["bright stone", None, "dull"] * 20)
    model, _, _, _ = fit(frame, "price", features, REGRESSOR, 0.25, 0)
    return export_model(model, dest, frame[feature_columns(features)], {"target": "price"})


@pytest.mark.parametrize(
    ("make", "reason"),
    [(float32_regressor, "cannot take these inputs"), (tfidf_regressor, "TfidfVectorizer")],
)
def test_a_model_without_an_exact_fast_path_is_imported_for_sklearn(tmp_path, make, reason):
    from inference.bento import fastpath_folder
    from inference.model import load_model

    result = importers.import_model(str(make(tmp_path / "model")))
    model = bentoml.models.get(result.tag)
    report = model.info.metadata["fast_path"]
    assert report["exact"] is False and report["engine"] == "sklearn"
    assert reason in report["reason"]
    assert not (Path(result.path) / "fastpath").exists() and fastpath_folder(model) is None
    loaded = load_model(Path(model.path_of("mlflow_model")), fast_folder=fastpath_folder(model))
    assert loaded.fast is None and loaded.engine == "sklearn"


def test_the_fast_path_is_checked_on_the_wandb_test_data(prod, monkeypatch, tmp_path):
    from tests.helpers.factories import synthetic_diamonds

    (tmp_path / "test").mkdir()
    synthetic_diamonds(50, seed=9).to_parquet(tmp_path / "test" / "test_data.parquet")
    test_ref = {"ref": "test_data:v0", "digest": "e" * 64}
    model = FakeWandbArtifact(
        prod.path,
        entity="team",
        project="tagserve-diamonds",
        version="v3",
        aliases=["prod"],
        metadata={**prod.metadata, "test_data": test_ref},
    )
    test_data = FakeWandbArtifact(
        tmp_path / "test",
        entity="team",
        project="tagserve-diamonds",
        version="v0",
        aliases=[],
        metadata={},
    )
    monkeypatch.setattr(
        wandb,
        "Api",
        fake_wandb_api(
            {
                "team/tagserve-diamonds/model_export:prod": model,
                "team/tagserve-diamonds/test_data:v0": test_data,
            }
        ),
    )
    result = importers.import_model("wandb:team/tagserve-diamonds/model_export:prod")
    report = bentoml.models.get(result.tag).info.metadata["fast_path"]
    assert report["exact"] and report["checked_on"]["test_data"] == 50
    assert len(test_data.downloads) == 1 and not Path(test_data.downloads[0]).exists()
