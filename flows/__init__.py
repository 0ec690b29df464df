"""Bytewax dataflows and the ``fusionrec`` command line: wiring only, logic lives in operators/."""
