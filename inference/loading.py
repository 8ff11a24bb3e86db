"""The one model loader: an exported MLflow model folder -> its native scikit-learn Pipeline.

A model folder is untrusted input (it may come from W&B or any disk), so it is read by these
rules, never by what the folder says of itself:

- the MLmodel file is read as plain YAML; MLflow's loader is not used, since it trusts the
  types the MLmodel lists and puts the model's ``code:`` folder on ``sys.path``;
- the model must be skops-serialized (no pickle, no cloudpickle) and ship no code;
- the model file must lie inside the folder;
- every type skops does not trust by default must be on :data:`ALLOWED_TYPES`, the types this
  project's pipeline produces; anything else is refused before a byte of it is loaded;
- every ``n_jobs`` is set to 1: a forest predicting with threads sums its trees in the order
  the threads finish, so the last bits of a regression would vary from call to call.
"""

from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from inference.contract import read_mlmodel
from inference.errors import ModelRefused, one_line

# The types beyond skops' own trusted set that the pipeline's models hold (pipeline.train):
# forests' trees, dtypes in fitted attributes, and np.ravel in the text column's flattener.
ALLOWED_TYPES = frozenset({"numpy.dtype", "sklearn.tree._tree.Tree", "numpy.ravel"})
SERIALIZATION = "skops"


def model_file(folder: Path, mlmodel: dict[str, Any] | None = None) -> Path:
    """The serialized model of the MLflow model ``folder``, after the rules that need no
    reading of it: an sklearn flavor, skops, no code, a model file inside the folder.

    Raises:
        ModelRefused: The rule broken, in one line.
    """
    folder = Path(folder)
    mlmodel = read_mlmodel(folder) if mlmodel is None else mlmodel
    flavors = mlmodel.get("flavors")
    if not isinstance(flavors, dict) or not isinstance(flavors.get("sklearn"), dict):
        raise ModelRefused("not a scikit-learn MLflow model: MLmodel has no sklearn flavor")
    with_code = [
        name for name, spec in flavors.items() if isinstance(spec, dict) and spec.get("code")
    ]
    if with_code or (folder / "code").exists():
        raise ModelRefused(
            "the model ships code of its own (a `code:` folder): refusing a model that could "
            "run it when loaded"
        )
    sklearn = flavors["sklearn"]
    serialization = sklearn.get("serialization_format")
    if serialization != SERIALIZATION:
        raise ModelRefused(
            f"the model is serialized with {serialization!r}, not skops: refusing a format "
            "that can run arbitrary code"
        )
    name = str(sklearn.get("pickled_model") or "")
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise ModelRefused(f"the model file {name!r} named by MLmodel is not inside the folder")
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ModelRefused(f"the model file {name!r} named by MLmodel leads out of the folder")
    if not path.is_file():
        raise ModelRefused(f"the model file {name} named by MLmodel is missing")
    return path


def untrusted_types(path: Path) -> list[str]:
    """The types in the skops file ``path`` that skops does not trust by default."""
    import skops.io

    try:
        return list(skops.io.get_untrusted_types(file=str(path)))
    except Exception as exc:  # zipfile, JSON, skops schema errors: a broken model file
        raise ModelRefused(f"cannot load the model from {path.name}: {one_line(exc)}") from None


def check_model(folder: Path) -> tuple[Path, list[str]]:
    """Every trust rule, without loading the model (no code of it runs): the model file of
    ``folder`` and the types it holds beyond skops' defaults, all on the allow-list.

    Raises:
        ModelRefused: The rule broken, in one line.
    """
    path = model_file(Path(folder))
    types = untrusted_types(path)
    refused = sorted(set(types) - ALLOWED_TYPES)
    if refused:
        raise ModelRefused(
            f"the model holds type(s) outside tagserve's allow-list: {', '.join(refused)}"
        )
    return path, types


def load_pipeline(folder: Path) -> Any:
    """The native scikit-learn model of the MLflow model ``folder``, single-threaded.

    Raises:
        ModelRefused: A trust rule is broken (see the module docstring), or the file cannot
            be loaded.
    """
    import skops.io

    path, types = check_model(Path(folder))
    try:
        with warnings.catch_warnings():
            # sklearn warns about version mismatches here; requirements.txt carries the pins.
            warnings.simplefilter("ignore")
            model = skops.io.load(str(path), trusted=types)
    except Exception as exc:  # skops, zipfile, sklearn... all mean "cannot load"
        raise ModelRefused(f"cannot load the model from {path.name}: {one_line(exc)}") from None
    return single_threaded(model)


def single_threaded(model: Any) -> Any:
    """``model`` with every ``n_jobs`` parameter set to 1 (bit-reproducible predictions)."""
    if hasattr(model, "get_params"):
        jobs = {k: 1 for k in model.get_params(deep=True) if k.split("__")[-1] == "n_jobs"}
        if jobs:
            model.set_params(**jobs)
    return model
