"""Kafka input that resumes each partition at the offset stored in that partition's RocksDB."""

from __future__ import annotations

import logging
from pathlib import Path

from bytewax.connectors.kafka import KafkaSource
from confluent_kafka import OFFSET_BEGINNING

from state.partition import read_stored_offset

__all__ = ["ResumingKafkaSource"]

log = logging.getLogger(__name__)


class ResumingKafkaSource(KafkaSource):
    """Bytewax's ``KafkaSource`` (``assign()``, no consumer group), started at our stored offsets.

    The offset committed atomically with a partition's state is the single source of truth;
    Bytewax's own recovery store is not needed. A partition without a database starts at the
    beginning of the topic.
    """

    def __init__(self, brokers: list[str], topic: str, state_dir: Path, *, tail: bool = True,
                 batch_size: int = 2000) -> None:
        super().__init__(brokers, [topic], tail=tail, starting_offset=OFFSET_BEGINNING,
                         batch_size=batch_size, raise_on_errors=False,
                         add_config={"fetch.wait.max.ms": "20", "statistics.interval.ms": "0"})
        self.state_dir = Path(state_dir)
        self.topic = topic

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):  # noqa: ANN201
        part = int(for_part.split("-", 1)[0])
        stored = read_stored_offset(self.state_dir, self.topic, part)
        log.info("partition %d of %s resumes at offset %s", part, self.topic, stored)
        return super().build_part(step_id, for_part, stored if stored is not None else resume_state)
