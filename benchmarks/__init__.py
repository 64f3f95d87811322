"""Speed benchmarks, run as scripts from the repository root (see README.md)."""
