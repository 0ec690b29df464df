"""The compacted-topic reader, re-exported from ``operators.topic_table`` (the flow reads topics too)."""

from operators.topic_table import BACKGROUND_FETCH_WAIT_MS, TopicTable

__all__ = ["TopicTable", "BACKGROUND_FETCH_WAIT_MS"]
