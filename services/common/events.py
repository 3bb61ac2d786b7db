"""The messages of the ``model-events`` topic: one pydantic model per ``type``.

Producers build a model and send :func:`encode` of it (key: the symbol, ``*`` for every
asset); readers call :func:`decode`, which answers ``None`` for a payload that is not a
model event (malformed JSON, an unknown ``type``, a missing field) so that one bad message
never stops a reader. Unknown extra fields are ignored: a newer producer may add fields.

* :class:`ModelPromoted` (``pricecast train``, ``pricecast rollback``): a new champion
  serves ``symbol`` (``None`` or ``*``: every asset) for ``interval`` (``None``: every
  interval); the prediction service reloads its champions and re-forecasts.
* :class:`RetrainRequested` (the API's ``POST /models/retrain``, the prediction service's
  accuracy tracking): the ``retrain_requests`` row ``request_id`` was queued. The row is the
  durable request; the message is a hint. ``ts``, the API's former name of
  ``requested_at``, is still read.

docs/architecture.md ("Kafka") lists the fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROMOTED: Literal["model_promoted"] = "model_promoted"
RETRAIN_REQUESTED: Literal["retrain_requested"] = "retrain_requested"


class _ModelEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", protected_namespaces=())

    @property
    def key(self) -> bytes:
        """The Kafka key: the symbol, ``*`` for every asset."""
        symbol = getattr(self, "symbol", None)
        return (symbol or "*").encode()


class ModelPromoted(_ModelEvent):
    type: Literal["model_promoted"] = PROMOTED
    symbol: str | None = None
    interval: str | None = None
    model: str | None = None
    version: str | None = None
    reason: str | None = None


class RetrainRequested(_ModelEvent):
    type: Literal["retrain_requested"] = RETRAIN_REQUESTED
    request_id: int
    symbol: str | None
    interval: str
    reason: str
    requested_by: str = "system"  # the table's default; the engine's former messages had none
    requested_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        validation_alias=AliasChoices("requested_at", "ts"),
    )
    details: dict[str, Any] = Field(default_factory=dict)


ModelEvent = Annotated[ModelPromoted | RetrainRequested, Field(discriminator="type")]
_EVENT: TypeAdapter[ModelPromoted | RetrainRequested] = TypeAdapter(ModelEvent)


def encode(event: ModelPromoted | RetrainRequested) -> bytes:
    return event.model_dump_json().encode()


def decode(raw: bytes | None) -> ModelPromoted | RetrainRequested | None:
    """The event in ``raw``; ``None`` when it is not a model event of a known type."""
    if raw is None:
        return None
    try:
        return _EVENT.validate_json(raw)
    except ValidationError:
        return None
