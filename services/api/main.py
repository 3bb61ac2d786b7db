"""The API application factory."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services import __version__
from services.api.core.errors import install_error_handlers
from services.api.core.middleware import ApiMiddleware
from services.api.core.security import SCOPES
from services.api.health import DataReport, api_health_router
from services.api.routes import assets, auth, bars, models, predictions, well_known
from services.api.state import ApiState
from services.api.stream import sse as stream_sse
from services.api.stream import ws as stream_ws
from services.api.stream.service import StreamService
from services.api.ui import mount_ui
from services.common.config import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Built eagerly (connections are opened lazily), so the app also works where the
    # lifespan does not run; the lifespan only releases them.
    state = ApiState.build(settings)
    stream = StreamService(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # GC's scans, so full collections stay short on the request path (p99).
        gc.freeze()
        stream.start()
        stream.install_signal_hook()
        yield
        gc.unfreeze()
        await stream.close()
        await state.close()

    app = FastAPI(
        title="Pricecast API",
        version=__version__,
        description="Asset price forecasts with provenance. Scopes: "
        + ", ".join(f"`{scope}` ({description})" for scope, description in SCOPES.items()),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.api = state
    app.state.stream = stream  # stream.stream_stats(): connections, subscriptions, feed
    install_error_handlers(app)

    for router in (
        auth.router,
        well_known.router,
        assets.router,
        bars.router,
        predictions.router,
        models.router,
        stream_ws.router,
        stream_sse.router,
    ):
        app.include_router(router)
    # /health/detailed's data report carries the stream's numbers too (subscribers, feed).
    app.include_router(api_health_router(state, DataReport(state, streams=stream.stream_stats)))
    mount_ui(app)  # the web dashboard at /ui/ (static files, its own CSP)

    origins = settings.cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Process-Time", "Retry-After"],
            max_age=600,
        )
    # Added last: outermost, so even CORS and 500 answers carry the request id.
    app.add_middleware(
        ApiMiddleware,
        max_body_bytes=settings.max_body_bytes,
        slow_request_ms=settings.slow_request_ms,
    )
    return app


def app_from_env() -> FastAPI:
    """``uvicorn --factory services.api.main:app_from_env`` (what every worker runs)."""
    return create_app(get_settings())
