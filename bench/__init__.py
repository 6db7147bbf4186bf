"""Benchmarks. Each module prints one JSON document; ``python -m bench`` runs them all."""
