"""Reconciliation with the portals, their own state as the witness: ``compare`` says what a
portal holds against the desired state (missing, drift, stale, unknown), ``service`` reads the
portals within their read budget and repairs what is the bridge's own, as a flush would, and
``report`` writes what it found (``bridge reconcile`` and the workers' periodic pass)."""
