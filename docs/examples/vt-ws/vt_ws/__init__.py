"""vt-ws: the vt tunnel carried inside a WebSocket connection (``proto ws;``)."""
