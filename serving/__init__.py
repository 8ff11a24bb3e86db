"""The pieces of ``service.py``, one module per concern; shipped in the bento beside it.

A request's path: ``middleware`` (every ASGI middleware, in the order a request meets them:
``drain``'s, ``routing``'s canary choice, ``admission``'s load shedding with ``arrival``'s
body deadline, readable errors, ``guard``'s body checks), then BentoML's APIs
(``service.py``, ``batching``) or ``routes`` (every route path, and the routes mounted beside
the APIs: ``protocol`` for MLflow's scoring protocol, ``metadata``, ``openapi``). Handlers
read the worker's ``state``; they predict through ``model_choice`` (the live model, or the
candidate), which hands the shadow's work to ``shadow``. At start-up: ``settings``,
``startup`` (``candidates``' check, ``loading``), the record types of ``schema``,
``bentoml_private``'s hooks. In the background: ``monitoring``, ``shadow``. Every Prometheus
metric: ``metrics``.
"""
