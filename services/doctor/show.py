"""Operator views behind ``make kafka-topics`` / ``make kafka-lag`` (no kcat needed)."""

from __future__ import annotations

import asyncio

from services.common.config import Settings
from services.doctor.kafka_state import group_lag, topic_states


def topics_table(settings: Settings, timeout_s: float) -> str:
    states = asyncio.run(
        asyncio.wait_for(topic_states(settings.kafka_bootstrap_servers, timeout_s), 3 * timeout_s)
    )
    lines = [f"{'TOPIC':<32}{'PARTITIONS':>11}{'MESSAGES':>12}{'END OFFSETS':>14}"]
    for name, st in sorted(states.items()):
        end = sum(st.end.values())
        lines.append(f"{name:<32}{st.partitions:>11}{st.messages:>12}{end:>14}")
    if not states:
        lines.append("(no topics)")
    return "\n".join(lines)


def lag_table(settings: Settings, timeout_s: float) -> str:
    plan = {
        settings.consumer_group_writer: [settings.topic_prices],
        settings.consumer_group_prediction: [settings.topic_prices],
    }

    async def collect() -> list[str]:
        wanted = sorted({topic for ts in plan.values() for topic in ts})
        states = await topic_states(settings.kafka_bootstrap_servers, timeout_s, wanted)
        lines = [f"{'GROUP':<24}{'TOPIC':<20}{'PART':>5}{'COMMITTED':>11}{'END':>11}{'LAG':>9}"]
        for group, topics in plan.items():
            mine = {topic: states[topic] for topic in topics if topic in states}
            lag = await group_lag(settings.kafka_bootstrap_servers, group, mine, timeout_s)
            for tp, value in sorted(lag.per_partition.items()):
                committed = lag.committed[tp]
                end = mine[tp.topic].end[tp.partition]
                shown = "-" if committed < 0 else str(committed)
                lines.append(
                    f"{group:<24}{tp.topic:<20}{tp.partition:>5}{shown:>11}{end:>11}{value:>9}"
                )
            members = "?" if lag.members is None else str(lag.members)
            lines.append(
                f"{group:<24}{'total':<20}{'':>5}{'':>11}{'':>11}{lag.total:>9}  members: {members}"
            )
        missing = [topic for topic in wanted if topic not in states]
        if missing:
            lines.append(f"missing topics: {', '.join(missing)}")
        return lines

    return "\n".join(asyncio.run(asyncio.wait_for(collect(), 4 * timeout_s)))
