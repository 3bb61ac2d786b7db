"""One exception tree (ml/errors.py): every exception class Pricecast defines derives from
PricecastError, so callers can catch all of its errors, or one family, by type."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import ml.errors
import services.common
from ml.errors import ForecastError, PricecastError
from services.common.errors import ApiError, AuthError, IngestError, StreamError

# Framework types on purpose (see ml/errors.py): Starlette answers this one with 413.
OUTSIDE = {"services.api.core.middleware._BodyTooLarge"}


# The packages' folders from their modules' files: under pytest ``import ml`` may resolve to
# the namespace package tests/ml (tests/ is on sys.path), whose __path__ is not the code's.
PACKAGES = {
    "ml": Path(ml.errors.__file__).parent,
    "services": Path(services.common.__file__).parent.parent,
}


def _modules() -> list[str]:
    names = []
    for package, folder in PACKAGES.items():
        for info in pkgutil.walk_packages([str(folder)], package + "."):
            names.append(info.name)
    return names


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{attr}"] = value
    return found


def test_every_exception_class_is_under_the_root() -> None:
    found = _defined_exceptions()
    assert len(found) >= 15  # the tree in ml/errors.py
    strays = [
        name
        for name, cls in found.items()
        if name not in OUTSIDE and not issubclass(cls, PricecastError)
    ]
    assert strays == []


@pytest.mark.parametrize(
    ("qualified", "family"),
    [
        ("ml.base.NotFittedError", ForecastError),
        ("ml.selection.InsufficientHistory", ForecastError),
        ("services.api.core.security.InvalidToken", AuthError),
        ("services.ingestion.validation.ValidationFailed", IngestError),
        ("services.ingestion.sources.http.UpstreamError", IngestError),
        ("services.ingestion.sources.resilience.CircuitOpenError", IngestError),
        ("services.api.stream.protocol.BadChannel", StreamError),
        ("services.api.stream.hub.Refused", StreamError),
        ("services.api.stream.watch.WatchError", StreamError),
    ],
)
def test_each_leaf_is_in_its_family(qualified: str, family: type[PricecastError]) -> None:
    module, _, name = qualified.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), name), family)


def test_the_catalogue_error_keeps_its_code_and_status() -> None:
    error = ApiError("ERR_PRED_002")
    assert isinstance(error, PricecastError)
    assert (error.code, error.status) == ("ERR_PRED_002", 404)
    assert error.body()["error"]["code"] == "ERR_PRED_002"
