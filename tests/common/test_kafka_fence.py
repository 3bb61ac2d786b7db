"""FencedConsumer's commit rules, on a stand-in consumer (pure unit tests: no broker)."""

from __future__ import annotations

from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from services.common.kafka import FencedConsumer

P0, P1, P2 = (TopicPartition("prices", partition) for partition in range(3))


class StandIn:
    """The three calls a fence makes on its consumer."""

    def __init__(self, assigned: set[TopicPartition], refuse: bool = False) -> None:
        self.assigned = assigned
        self.refuse = refuse
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            raise CommitFailedError("rebalanced")
        self.commits.append(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))


def fenced(stand_in: StandIn, revoked: list[list[TopicPartition]] | None = None) -> FencedConsumer:
    fence = FencedConsumer("group", on_revoked=None if revoked is None else revoked.append)
    fence.consumer = cast(AIOKafkaConsumer, cast(Any, stand_in))
    return fence


async def test_commits_last_plus_one_for_the_partitions_still_assigned() -> None:
    stand_in = StandIn({P0, P1})
    fence = fenced(stand_in)
    assert await fence.commit({P0: 9, P1: 41, P2: 7}, fence.generation)
    assert stand_in.commits == [{P0: 10, P1: 42}]


async def test_a_batch_read_before_a_rebalance_is_neither_committed_nor_sought_back() -> None:
    stand_in, revoked = StandIn({P0}), []
    fence = fenced(stand_in, revoked)
    generation = fence.generation
    await fence.on_partitions_revoked([P1])
    await fence.on_partitions_assigned([P0])
    assert fence.generation == generation + 2 and revoked == [[P1]]
    assert not await fence.commit({P0: 9}, generation)
    assert not fence.seek_back({P0: 5}, generation)
    assert stand_in.commits == [] and stand_in.seeks == [] and fence.fenced == 2
    assert await fence.commit({P0: 9}, fence.generation)  # the re-read batch commits
    assert fence.seek_back({P0: 5}, fence.generation) and stand_in.seeks == [(P0, 5)]


async def test_a_refused_commit_is_reported_not_raised() -> None:
    fence = fenced(StandIn({P0}, refuse=True))
    assert not await fence.commit({P0: 3}, fence.generation)


async def test_nothing_is_committed_without_a_running_consumer() -> None:
    fence = FencedConsumer("group")
    assert not await fence.commit({P0: 3}, fence.generation)
    assert await fence.lag() is None
