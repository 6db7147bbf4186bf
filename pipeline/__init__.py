"""The domain: configuration, images, ingestion, watching, retrieval, the daemon and the CLI."""
