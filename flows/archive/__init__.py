"""The archiving flow: the Bytewax wiring (``dataflow``, whose module-level ``flow`` ``bytewax.run``
starts: ``flows.archive.dataflow:flow``) and the lake source and per-partition writer (``logic``)."""
