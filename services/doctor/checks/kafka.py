"""Kafka: broker reachable, listeners correctly advertised, topics present, consumer lag."""

from __future__ import annotations

import asyncio
import socket

from services.common.config import comma_items, server_address
from services.common.kafka import all_topics
from services.doctor.kafka_state import GroupLag, advertised_brokers, group_lag, topic_states
from services.doctor.model import CheckSpec, Context, Finding, describe

ADVERTISED_FIX = (
    "the broker advertises an address this host cannot reach: set advertised.listeners "
    "(KAFKA_ADVERTISED_LISTENERS) to a host:port clients can reach, e.g. "
    "PLAINTEXT://kafka-0.kafka-headless.<ns>.svc:9092 in Kubernetes, and add an EXTERNAL "
    "listener for clients outside the cluster"
)


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    return [hp for server in comma_items(bootstrap) if (hp := server_address(server)) is not None]


def _tcp(host: str, port: int, timeout_s: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection, the error otherwise."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return describe(exc)


def broker(ctx: Context) -> Finding:
    name = "kafka.broker"
    settings = ctx.settings
    if not settings.kafka_configured:
        if settings.is_production:
            return Finding(
                name,
                "fail",
                "KAFKA_BOOTSTRAP_SERVERS is not set",
                "set KAFKA_BOOTSTRAP_SERVERS to the brokers (ConfigMap), e.g. kafka:9092",
            )
        return Finding(
            name,
            "warn",
            "KAFKA_BOOTSTRAP_SERVERS is not set: only pricecast run works (it starts an "
            "in-memory Tansu broker and passes its address to the services)",
            "for pricecast ingest/predict on their own, start Kafka and set "
            "KAFKA_BOOTSTRAP_SERVERS=host:9092",
        )
    servers = _servers(settings.kafka_bootstrap_servers)
    if not servers:
        return Finding(
            name,
            "fail",
            f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers!r} has no host:port",
            "use a comma list of host:port, e.g. kafka-0:9092,kafka-1:9092",
        )
    connect_timeout = min(ctx.timeout_s / 2, 2.0)
    errors = {f"{host}:{port}": _tcp(host, port, connect_timeout) for host, port in servers}
    answering = [hp for hp, err in errors.items() if err is None]
    if not answering:
        detail = "; ".join(f"{hp}: {err}" for hp, err in errors.items())
        return Finding(
            name,
            "fail",
            detail,
            "no bootstrap server accepts connections: start Kafka (or its pods) or fix "
            "KAFKA_BOOTSTRAP_SERVERS; a restarted Tansu dev broker has a new port and no "
            "topics: restart the whole stack (pricecast run)",
        )
    try:
        ctx.kafka_brokers = asyncio.run(
            advertised_brokers(settings.kafka_bootstrap_servers, ctx.timeout_s * 0.8)
        )
    except Exception as exc:  # noqa: BLE001
        return Finding(
            name,
            "fail",
            f"{', '.join(answering)} accepts TCP but metadata failed: {describe(exc)}",
            "this port does not speak plain Kafka: wrong port, or a TLS/SASL listener "
            "(Pricecast uses PLAINTEXT); check the broker's listeners",
        )
    down = [hp for hp, err in errors.items() if err is not None]
    evidence = (
        f"bootstrap {', '.join(answering)} answered metadata: {len(ctx.kafka_brokers)} broker(s)"
    )
    data = {"brokers": [f"{host}:{port}" for _, host, port in ctx.kafka_brokers]}
    if down:
        return Finding(
            name,
            "warn",
            f"{evidence}; not answering: {', '.join(down)}",
            "some bootstrap servers are down: check those brokers or drop them from "
            "KAFKA_BOOTSTRAP_SERVERS",
            data,
        )
    return Finding(name, "ok", evidence, data=data)


def advertised(ctx: Context) -> Finding:
    """Every broker the metadata names must be reachable at its *advertised* address: clients
    bootstrap fine and then fail on produce/fetch when a listener is misadvertised."""
    name = "kafka.advertised"
    if not ctx.settings.kafka_configured:
        return Finding(name, "skip", "KAFKA_BOOTSTRAP_SERVERS is not set", "see kafka.broker")
    if not ctx.kafka_brokers:
        return Finding(name, "fail", "the cluster metadata lists no broker", ADVERTISED_FIX)
    timeout = min(ctx.timeout_s / 2, 2.0)
    results = {
        f"{host}:{port} (node {node})": _tcp(host, port, timeout)
        for node, host, port in ctx.kafka_brokers
    }
    bad = {address: error for address, error in results.items() if error is not None}
    if bad:
        return Finding(
            name,
            "fail",
            "advertised but unreachable from here: "
            + "; ".join(f"{address}: {error}" for address, error in bad.items())
            + f" (bootstrap {ctx.settings.kafka_bootstrap_servers} answered)",
            ADVERTISED_FIX,
            {"unreachable": list(bad)},
        )
    return Finding(name, "ok", f"advertised listeners reachable: {', '.join(results)}")


def topics(ctx: Context) -> Finding:
    name = "kafka.topics"
    settings = ctx.settings
    wanted = all_topics(settings)
    states = asyncio.run(
        topic_states(settings.kafka_bootstrap_servers, ctx.timeout_s * 0.8, wanted)
    )
    missing = [topic for topic in wanted if topic not in states]
    counts = ", ".join(
        f"{topic} {st.partitions}p/{st.messages} msgs" for topic, st in states.items()
    )
    data = {
        "topics": {
            topic: {"partitions": st.partitions, "messages": st.messages}
            for topic, st in states.items()
        },
        "missing": missing,
    }
    if missing:
        return Finding(
            name,
            "fail",
            f"missing: {', '.join(missing)}" + (f"; present: {counts}" if counts else ""),
            "the services create them at start (pricecast ingest / predict); or create them: "
            f"kafka-topics.sh --create --topic <name> --partitions {settings.kafka_partitions} "
            f"--replication-factor {settings.kafka_replication_factor}. On a restarted Tansu dev "
            "broker the topics (and every message) are gone: restart the services",
            data,
        )
    few = [topic for topic, st in states.items() if st.partitions < settings.kafka_partitions]
    if few:
        return Finding(
            name,
            "warn",
            "fewer partitions than "
            f"PRICECAST_KAFKA_PARTITIONS={settings.kafka_partitions}: {counts}",
            "consumers scale only to the partition count: kafka-topics.sh --alter --topic "
            f"<name> --partitions {settings.kafka_partitions} (keys move: expect a brief reorder)",
            data,
        )
    return Finding(name, "ok", counts, data=data)


def group_topics(ctx: Context) -> dict[str, list[str]]:
    settings = ctx.settings
    return {
        settings.consumer_group_writer: [settings.topic_prices],
        settings.consumer_group_prediction: [settings.topic_prices],
    }


def _lag_text(lag: GroupLag) -> str:
    members = "" if lag.members is None else f", {lag.members} member(s)"
    committed = "" if lag.committed_any else ", nothing committed"
    return f"{lag.group} {lag.total} behind{committed}{members}"


def consumer_lag(ctx: Context) -> Finding:
    """End offset minus committed offset, per consumer group, on the topics it consumes."""
    name = "kafka.consumer_lag"
    settings = ctx.settings

    async def collect() -> list[GroupLag]:
        plan = group_topics(ctx)
        wanted = sorted({topic for ts in plan.values() for topic in ts})
        states = await topic_states(settings.kafka_bootstrap_servers, ctx.timeout_s * 0.4, wanted)
        out = []
        for group, group_topic_names in plan.items():
            mine = {topic: states[topic] for topic in group_topic_names if topic in states}
            out.append(
                await group_lag(settings.kafka_bootstrap_servers, group, mine, ctx.timeout_s * 0.2)
            )
        return out

    lags = asyncio.run(collect())
    evidence = "; ".join(_lag_text(lag) for lag in lags)
    data = {
        lag.group: {
            "lag": lag.total,
            "members": lag.members,
            "committed_any": lag.committed_any,
            "per_partition": {
                f"{tp.topic}[{tp.partition}]": partition_lag
                for tp, partition_lag in lag.per_partition.items()
            },
        }
        for lag in lags
    }
    worst = max((lag.total for lag in lags), default=0)
    fix = (
        "the consumer is stopped or slower than the producers: is pricecast ingest (writer, "
        "group price-consumer) / pricecast predict (prediction-engine) running? scale its "
        "replicas up to the partition count; a writer stuck on the database shows in "
        "postgres.* checks; make kafka-lag shows lag per partition"
    )
    if worst > settings.doctor_lag_fail:
        return Finding(name, "fail", f"{evidence} (> {settings.doctor_lag_fail})", fix, data)
    if worst > settings.doctor_lag_warn:
        return Finding(name, "warn", f"{evidence} (> {settings.doctor_lag_warn})", fix, data)
    return Finding(name, "ok", evidence, data=data)


CHECKS = (
    CheckSpec("kafka.broker", broker, about="bootstrap answers and returns metadata"),
    CheckSpec("kafka.advertised", advertised, needs=("kafka.broker",)),
    CheckSpec("kafka.topics", topics, needs=("kafka.advertised",)),
    CheckSpec("kafka.consumer_lag", consumer_lag, needs=("kafka.topics",)),
)
