"""The domain: settings, storage, registry, the ingest path, flows and metrics."""
