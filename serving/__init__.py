"""The pieces of ``service.py`` that need no running service: settings, the typed schema
built from the model's contract, the MLflow scoring protocol, BentoML's private hooks, and the
service's extra HTTP routes and middleware. Shipped in the bento beside ``service.py``."""
