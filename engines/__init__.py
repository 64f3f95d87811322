"""Framework-free inference engines. Nothing in this package may import Django."""
