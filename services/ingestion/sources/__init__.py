"""Price sources behind one interface (:class:`services.ingestion.sources.base.Source`)."""
