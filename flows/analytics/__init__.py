"""The analytics flow: the Bytewax wiring (``dataflow``, whose module-level ``flow`` ``bytewax.run``
starts: ``flows.analytics.dataflow:flow``) and the per-partition join, publish and commit (``logic``)."""
