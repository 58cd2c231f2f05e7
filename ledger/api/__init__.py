"""The audit API and web page (``ledger serve``).

- :mod:`ledger.api.app` — the FastAPI application, its configuration
  (:class:`~ledger.api.app.ApiConfig`: bearer token, CORS, upload limit) and the
  background indexer it runs;
- :mod:`ledger.api.routes` — one router per resource: ``runs`` (list, one run,
  lineage, taint), ``lookup`` (file CID or tensor root), ``verify`` (re-checked
  against the chain, never from the index alone), ``health``, and ``web`` (the
  page: plain HTML, a little vanilla JS and inline SVG, in ``web/``);
- :mod:`ledger.api.problems` — every error as ``application/problem+json``
  (RFC 9457), with the status the :mod:`ledger.errors` tree gives it.
"""
