"""The compacted-topic reader, re-exported from ``operators.topic_table`` (the flow reads topics too)."""

from operators.topic_table import TopicTable

__all__ = ["TopicTable"]
