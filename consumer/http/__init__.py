"""The HTTP API: :mod:`consumer.http.app` (the app, probes, OpenAPI export, serving),
:mod:`consumer.http.routes` (the ``/api/v1`` endpoints) and :mod:`consumer.http.schemas`
(request/response bodies and the JSON error)."""
