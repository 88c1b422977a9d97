"""ddmd_stream: ML-steered streaming ensembles of MD simulations (DeepDriveMD-S)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__"]


def __getattr__(name: str) -> Any:
    """`Run` (ddmd_stream.api) on first use, so that importing the package stays light."""
    if name == "Run":
        from ddmd_stream.api import Run

        return Run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
