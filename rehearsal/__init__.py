"""A rehearsal of production on one machine (``make rehearse``, as root): hosts made of network
namespaces on a private bridge, real ``bentoml serve`` replicas of two models behind Debian's
HAProxy, a rolling upgrade by release tag and a lost replica under load from a client host,
and a negative control that must show errors. docs/deploying.md explains how to read it."""
