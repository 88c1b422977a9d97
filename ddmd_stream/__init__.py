"""ddmd_stream: ML-steered streaming ensembles of MD simulations (DeepDriveMD-S)."""

__version__ = "0.1.0"
