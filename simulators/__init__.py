"""Event generators: a synthetic shop with known tastes, replay of real logs, and the Kafka producer."""
