"""Benchmarks of fpmd_core and fpmd_ros; each script runs from the repository root as a module,
``python -m bench.<script> ...`` (its docstring gives the command), and writes under
bench/results/."""
