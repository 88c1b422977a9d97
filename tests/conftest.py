"""Shared test set-up: keep ADIOS2 traffic on loopback; paths of the shipped XML files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# SST advertises the first non-loopback interface unless told otherwise; the shipped XML says
# NetworkInterface=lo, and this keeps every process the tests start on loopback as well.
os.environ.setdefault("ADIOS2_IP", "127.0.0.1")

REPO = Path(__file__).resolve().parent.parent
SST_XML = REPO / "adios_xml" / "sst.xml"
BP5_XML = REPO / "adios_xml" / "bp5.xml"


@pytest.fixture(params=["sst", "bp5"])
def stream_xml(request: pytest.FixtureRequest) -> Path:
    """The shipped XML for simulation streams over SST, then over BP5 (same code, XML swapped)."""
    return SST_XML if request.param == "sst" else BP5_XML
