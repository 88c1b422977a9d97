"""Molecular dynamics: OpenMM system setup, CA geometry, and the streaming frame reporter."""
