"""The Kafka event log on aiokafka."""
