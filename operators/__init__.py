"""Per-event logic the flows and the API call: parse, validate, update state, score. No Bytewax here."""
