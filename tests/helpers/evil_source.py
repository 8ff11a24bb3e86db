"""A hostile module: importing it writes the file $TAGSERVE_TEST_MARKER (tests copy this file
into a model's code folder or onto sys.path as ``evil.py``; nothing may ever import it)."""

import os
from pathlib import Path

from sklearn.base import BaseEstimator, TransformerMixin

Path(os.environ.get("TAGSERVE_TEST_MARKER", "/tmp/tagserve-evil-ran")).write_text("ran")


class Boom(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X
