"""Built-in transports (tcp, udp), registered like any external plugin."""
