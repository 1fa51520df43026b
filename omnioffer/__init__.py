"""Application shell: command line, settings and local services."""
