"""Campaigns in the API: the admin endpoints (``endpoints``), the document they accept (``schema``),
and the in-memory registry the request path reads (``registry``)."""
