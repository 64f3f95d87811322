"""Writes to the registry. Views, admin and commands call these; nothing else saves models."""
