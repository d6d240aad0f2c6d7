"""The embedded event log on stdlib sqlite3 with Kafka semantics (topics, partitions, groups, redelivery)."""
