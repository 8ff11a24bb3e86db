"""The inference artifact's one home: what every consumer of an exported model shares.

- ``inference.contract``: the model's MLflow signature as typed columns, the one type table,
  strict validation (the service) and lenient coercion (the clients) over it.
- ``inference.loading``: the one loader: skops only, the project's own allow-list of types,
  no code shipped with the model, every ``n_jobs`` 1.
- ``inference.model``: a loaded model and its contract: ``predict``, ``predict_json``,
  ``predict_records``.
- ``inference.bento``: a model in the BentoML model store.
- ``inference.errors`` and ``inference.cli``: errors worded for the user, the one-line CLI
  boundary.
- ``inference.constants``: names shared by the pipeline, importer, service, clients, release.
- ``inference.strict_json`` and ``inference.files``: the one strict-JSON encoder and the one
  atomic file write (and folder publish) of the project.

It depends on no part of the pipeline, on no Hydra and no W&B: a bento ships it beside
``service.py``.
"""
