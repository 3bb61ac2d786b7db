"""Settings with Kafka topics and consumer groups of their own, for tests that share a broker."""

from __future__ import annotations

import uuid
from typing import Any

from services.common.config import Settings


def own_topics(settings: Settings, extra: dict[str, Any] | None = None) -> Settings:
    """``settings`` with fresh topic and consumer-group names (one random tag), ``extra``
    settings on top."""
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(
        update={
            "topic_prices": f"prices-{tag}",
            "topic_prices_dlq": f"prices.dlq-{tag}",
            "topic_predictions": f"predictions-{tag}",
            "topic_model_events": f"model-events-{tag}",
            "consumer_group_writer": f"price-consumer-{tag}",
            "consumer_group_prediction": f"prediction-engine-{tag}",
            **(extra or {}),
        }
    )
