"""The processes: ingest API, query API, MQTT bridge, embedded broker, simulator and the CLI."""
