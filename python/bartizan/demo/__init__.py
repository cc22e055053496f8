"""A small Django site bundled with Bartizan for trying out and testing the server."""
