"""Starlette app: recommendations, campaigns, IQL, optimizer, events, catalog, analytics."""
