"""The one exception tree of Pricecast: every error it raises on purpose derives from
:class:`PricecastError`, so a caller catches all of them, or one family, by type.

The root lives here because ``ml/`` is the lowest layer (it never imports ``services/``),
so the forecasting library and the services share it. The service families are in
``services/common/errors.py``; each leaf stays beside the code that raises it::

    PricecastError                root (this module)
    +-- ForecastError             a model cannot answer (this module)
    |   +-- NotFittedError        ml/base.py: used before fit (also RuntimeError)
    |   +-- InsufficientHistory   ml/selection.py: fewer days than ARIMA needs (ERR_PRED_001)
    +-- RegistryError             ml/registry.py: the model registry (also RuntimeError)
    |   +-- ChecksumMismatch      ml/registry.py: an artifact that fails its checksum
    +-- ApiError                  services/common/errors.py: catalogue code, HTTP status, details
    +-- AuthError                 services/common/errors.py
    |   +-- InvalidToken          services/api/core/security.py: a token not to be trusted
    +-- IngestError               services/common/errors.py
    |   +-- ValidationFailed      services/ingestion/validation.py: a tick breaks a rule (DLQ)
    |   +-- UpstreamError         services/ingestion/sources/http.py: an attempt worth retrying
    |   +-- CircuitOpenError      services/ingestion/sources/resilience.py: the breaker is open
    +-- StreamError               services/common/errors.py: the live streams
    |   +-- BadChannel            services/api/stream/protocol.py (also ValueError)
    |   +-- BadMessage            services/api/stream/ws.py (also ValueError)
    |   +-- Refused               services/api/stream/hub.py: carries the close code
    |   +-- WatchError            services/api/stream/watch.py: ``pricecast watch`` stops
    +-- Interrupted               services/prediction/planning.py: stop while a batch waited

Outside the tree on purpose: the API's ``_BodyTooLarge`` is a Starlette ``HTTPException`` (the
framework answers it with 413), and library errors (SQLAlchemy, Redis, aiokafka, httpx) pass
through unwrapped where a caller handles them by their own types.
"""

from __future__ import annotations


class PricecastError(Exception):
    """The root of every error Pricecast raises on purpose."""


class ForecastError(PricecastError):
    """A model cannot answer: not fitted, or too little history."""
