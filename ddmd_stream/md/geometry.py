"""CA geometry with numpy only: contact maps, Kabsch RMSD, CA atom selection."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _as_coords(array: np.ndarray, name: str) -> np.ndarray:
    """A float64 (n, 3) copy-or-view of `array`; ValueError on any other shape."""
    coords = np.asarray(array, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3), got {coords.shape}")
    return coords


def contact_map(ca_positions_angstrom: np.ndarray, cutoff_angstrom: float) -> np.ndarray:
    """uint8 (n, n) matrix: 1 where the CA-CA distance is below the cutoff (diagonal 1)."""
    if cutoff_angstrom <= 0:
        raise ValueError(f"cutoff_angstrom must be positive, got {cutoff_angstrom}")
    coords = _as_coords(ca_positions_angstrom, "ca_positions_angstrom")
    diff = coords[:, None, :] - coords[None, :, :]
    squared = np.einsum("ijk,ijk->ij", diff, diff)
    return (squared < cutoff_angstrom * cutoff_angstrom).astype(np.uint8)


def kabsch_rmsd(coords: np.ndarray, reference: np.ndarray) -> float:
    """RMSD after optimal rigid superposition of `coords` onto `reference` (same units as input)."""
    mobile = _as_coords(coords, "coords")
    target = _as_coords(reference, "reference")
    if mobile.shape != target.shape:
        raise ValueError(f"coords {mobile.shape} and reference {target.shape} differ in shape")
    if len(mobile) == 0:
        raise ValueError("cannot compute an RMSD of zero atoms")
    mobile = mobile - mobile.mean(axis=0)
    target = target - target.mean(axis=0)
    # Covariance -> SVD; flip the last axis if the best orthogonal map is a reflection.
    u, _, vt = np.linalg.svd(mobile.T @ target)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    u[:, -1] *= sign
    rotated = mobile @ (u @ vt)
    return float(np.sqrt(np.mean(np.sum((rotated - target) ** 2, axis=1))))


def ca_indices(topology: Any) -> np.ndarray:
    """int64 indices of the protein CA atoms (named 'CA') of an OpenMM topology."""
    # A one-atom residue named CA is a calcium ion, not an alpha carbon.
    indices = [
        atom.index
        for atom in topology.atoms()
        if atom.name == "CA" and len(list(atom.residue.atoms())) > 1
    ]
    if not indices:
        raise ValueError("the topology has no CA atoms (no atom named 'CA' in a protein residue)")
    return np.asarray(indices, dtype=np.int64)
