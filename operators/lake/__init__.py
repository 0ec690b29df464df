"""The event lake: events and catalog changes archived from Kafka as Parquet, and training read back from it.

Modules (import them directly; this file imports nothing, so ``import operators.lake`` does not load pyarrow):

* ``schema``   — Arrow schemas of the lake and the conversion of Kafka messages to rows;
* ``store``    — files by date plus one manifest per Kafka partition (files and next offset), exactly once;
* ``read``     — a time window of events as an ``InteractionLog``, the catalog as of a time;
* ``training`` — train a model version from a window of the lake.
"""
