"""Development tools: ``stack`` (``bridge dev``), ``embedded`` (the Redis-compatible server it
runs), ``generate`` (realistic events) and ``sender`` (``bridge send``)."""
