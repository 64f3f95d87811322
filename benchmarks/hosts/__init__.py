"""Worker "hosts" in network namespaces, for a distributed platform on one machine (root only).

`python -m benchmarks.hosts --help` for the command line; `harness.Harness` for benchmarks and tests.
"""
