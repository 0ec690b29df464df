"""RocksDB stores (one database per Kafka partition), their key layout and value encoding."""
