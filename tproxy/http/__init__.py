"""HTTP/1.1 for tproxy: the client-facing server, the upstream pool, and their helpers."""
