"""Event logs: the port (``base``), the embedded SQLite log (``local/``) and Kafka (``kafka/``), chosen by URL."""
