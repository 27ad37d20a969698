"""The privileged side: everything under this package runs as root."""
