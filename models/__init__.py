"""Numeric models: Cleora, EMDE, baselines, metrics. Imports nothing else of fusionrec."""
