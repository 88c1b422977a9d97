"""Geometry with numpy only: contact maps, Kabsch RMSD, CA atom selection, dihedrals."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Residue names taken as water (solvation checks, heavy-atom selections).
WATER_RESIDUES = frozenset({"HOH", "WAT", "H2O", "SOL", "TIP3", "TIP4", "SPC"})


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


Quad = tuple[int, int, int, int]


def dihedrals(positions: np.ndarray, quads: list[Quad]) -> np.ndarray:
    """Dihedral angles (degrees, -180..180) of atom quadruples: (frames, len(quads)).

    `positions` is (frames, atoms, 3) in any length unit."""
    coords = np.asarray(positions, dtype=np.float64)
    angles = []
    for a, b, c, d in quads:
        b0 = coords[:, a] - coords[:, b]
        b1 = coords[:, c] - coords[:, b]
        b2 = coords[:, d] - coords[:, c]
        b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
        v = b0 - np.sum(b0 * b1, axis=1, keepdims=True) * b1
        w = b2 - np.sum(b2 * b1, axis=1, keepdims=True) * b1
        x = np.sum(v * w, axis=1)
        y = np.sum(np.cross(b1, v) * w, axis=1)
        angles.append(np.degrees(np.arctan2(y, x)))
    return np.stack(angles, axis=1) if angles else np.empty((len(coords), 0))


def phi_psi_atoms(topology: Any, residue: int | None = None) -> list[Quad]:
    """Atom indices of φ (C-N-CA-C) and ψ (N-CA-C-N) of a residue of an OpenMM topology.

    `residue` is the residue index; None takes the first residue with a CA that has
    neighbours on both sides (alanine dipeptide: the ALA between ACE and NME)."""
    residues = list(topology.residues())
    atom = {(r.index, a.name): a.index for r in residues for a in r.atoms()}

    def complete(i: int) -> bool:
        return all(key in atom for key in ((i - 1, "C"), (i, "N"), (i, "CA"), (i, "C"),
                                           (i + 1, "N")))

    if residue is None:
        residue = next((r.index for r in residues if complete(r.index)), None)
    if residue is None or not complete(residue):
        raise ValueError("no residue with a complete backbone (C-N-CA-C-N) for φ/ψ")
    phi = (atom[residue - 1, "C"], atom[residue, "N"], atom[residue, "CA"], atom[residue, "C"])
    psi = (atom[residue, "N"], atom[residue, "CA"], atom[residue, "C"], atom[residue + 1, "N"])
    return [phi, psi]


def heavy_atom_indices(topology: Any) -> np.ndarray:
    """int64 indices of the non-hydrogen atoms of the protein (no water; a one-atom residue is
    an ion)."""
    indices = [
        atom.index
        for atom in topology.atoms()
        if atom.residue.name.upper() not in WATER_RESIDUES
        and (atom.element is None or atom.element.symbol != "H")
        and len(list(atom.residue.atoms())) > 1
    ]
    if not indices:
        raise ValueError("the topology has no heavy atoms outside water and ions")
    return np.asarray(indices, dtype=np.int64)


def select_atoms(topology: Any, selection: str | list[int]) -> np.ndarray:
    """Atom indices of `selection`: "ca", "heavy" (protein non-hydrogen), "all" or a list."""
    if selection == "ca":
        return ca_indices(topology)
    if selection == "heavy":
        return heavy_atom_indices(topology)
    n_atoms = topology.getNumAtoms()
    if selection == "all":
        return np.arange(n_atoms, dtype=np.int64)
    indices = np.asarray(selection, dtype=np.int64)
    if indices.ndim != 1 or len(indices) == 0 or indices.min() < 0 or indices.max() >= n_atoms:
        raise ValueError(f"atom indices must be a non-empty list within 0..{n_atoms - 1}")
    return indices
