"""napari-shrec benchmarks: per-stage scripts (bench_*.py) and the runner (python -m benchmarks)."""
