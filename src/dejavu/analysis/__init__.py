"""Déjà vu metrics from stored attack arrays: pure numpy, no torch models (DESIGN 2.5)."""
