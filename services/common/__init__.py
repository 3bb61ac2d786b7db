"""Code shared by every Pricecast service: settings, infrastructure, DB, Kafka, Redis."""
