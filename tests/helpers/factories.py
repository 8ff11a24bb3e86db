"""Small builders the test modules share: synthetic data and an isolated BentoML home."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_diamonds(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Tiny diamonds-like data with every column the real feature config reads."""
    rng = np.random.default_rng(seed)
    carat = rng.uniform(0.2, 2.5, n)
    return pd.DataFrame(
        {
            "carat": carat,
            "depth": rng.uniform(58, 65, n),
            "table": rng.uniform(53, 62, n),
            "x": carat * 3,
            "y": carat * 3,
            "z": carat * 1.8,
            "cut": rng.choice(["Ideal", "Good", "Premium"], n),
            "color": rng.choice(list("JIHGFED"), n),
            "clarity": rng.choice(["I1", "SI2", "VS1", "IF"], n),
            "price": carat * 4000 + rng.normal(0, 50, n),
        }
    )


@contextlib.contextmanager
def bentoml_home(home: Path) -> Iterator[Path]:
    """Point this process's BentoML at ``home`` (its model and bento stores).

    BentoML resolves ``BENTOML_HOME`` once and caches the stores in its DI container: the
    container's providers are overridden, and restored afterwards (by hand: simple_di's
    ``patch`` does not restore when its body raises).
    """
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    models, bentos = home / "models", home / "bentos"
    models.mkdir(parents=True, exist_ok=True)
    bentos.mkdir(parents=True, exist_ok=True)
    overrides = [
        (BentoMLContainer.bentoml_home, str(home)),
        (BentoMLContainer.model_store_dir, str(models)),
        (BentoMLContainer.model_store, ModelStore(str(models))),
        (BentoMLContainer.bento_store_dir, str(bentos)),
        (BentoMLContainer.bento_store, BentoStore(str(bentos))),
    ]
    patches = [provider.patch(value) for provider, value in overrides]
    for patch in patches:
        patch.__enter__()
    try:
        yield home
    finally:
        for patch in reversed(patches):
            patch.__exit__(None, None, None)
