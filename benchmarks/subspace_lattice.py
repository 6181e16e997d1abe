"""SubspaceOGR on Duda's 3-D Beale lattice for d = 1 and 2, beside the published geometric means.

J. Duda's subspace notebook (github.com/JarekDuda/SGD-OGR-Hessian-estimator, ``SGD-sORG 3D subspace.nb``,
figure ``subspace OGR.png``) reports geometric means of the final f over the 125 starts {-2..2}^3 after 50
steps with gradient noise σ = 0.1: 0.00742 (d = 1) and 0.0120 (d = 2). This runs the lattice protocol of
``hessopt.bench.lattice`` (5 noise seeds, the same noise for every method) with three configurations per d:

* ``proto``: the prototype's rule: Duda's rotation (every row plus Γg, Gram-Schmidt), no QR step, SGD
  outside with α = 0 (the notebook's evaluation cells), his tuned settings converted (d = 1: β 0.4, γ 0.3,
  Γ 0.1, div 1.5, cut 15; d = 2: β 0.4, γ 0.1, Γ 0.2, div 4, cut 20), means and statistics from 0, no ridge
  floor. hessopt always rotates the statistics with the basis (the prototype does not).
* ``oja+qr``: the same settings with hessopt's Oja rotation and the QR-method step.
* ``dsogr``: :data:`hessopt.optim.DUDA_SUBSPACE_OGR` (the dsOGR mix with diagonal OGR outside; w = 0.3 for
  d = 1, 0.4 for d = 2).

Run: ``python benchmarks/subspace_lattice.py`` (a few minutes on one core).
"""

from __future__ import annotations

import statistics

from hessopt.bench.lattice import LatticeMethod, run_lattice
from hessopt.optim import DUDA_SUBSPACE_OGR, SubspaceOGR

PUBLISHED = {1: 0.00742048, 2: 0.0119627}
TUNED = {
    1: {"beta": 0.4, "gamma": 0.3, "rotation_rate": 0.1, "div": 1.5, "cut": 15.0},
    2: {"beta": 0.4, "gamma": 0.1, "rotation_rate": 0.2, "div": 4.0, "cut": 20.0},
}
PROTO = {"lr": 1.0, "mean_init": "zero", "ridge_rel": 0.0, "ridge_abs": 0.0, "max_coord_step": None}


def methods(d: int) -> list[LatticeMethod]:
    """The three configurations for subspace dimension ``d``."""
    proto = {**PROTO, **TUNED[d], "rank": d, "rotation": "duda", "qr": False, "outside": "sgd",
             "outside_scale": 0.0}  # fmt: skip
    oja = {**proto, "rotation": "oja", "qr": True}
    dsogr = {**DUDA_SUBSPACE_OGR, "rank": d, "mix": 0.3 if d == 1 else 0.4}
    return [
        LatticeMethod(f"subspace-d{d}-{name}", SubspaceOGR, {"3d": cfg, "2d": cfg}, "separate", name)
        for name, cfg in (("proto", proto), ("oja+qr", oja), ("dsogr", dsogr))
    ]


def main() -> None:
    """Print the geometric means per noise seed and their range, beside the published value."""
    for d in (1, 2):
        for row_group in _by_method(run_lattice("beale3d", methods(d), noise_seeds=range(5))):
            values = [r["metric"] for r in row_group]
            print(
                f"d={d} {row_group[0]['method']}: geometric means {[f'{v:.3g}' for v in values]}, "
                f"median {statistics.median(values):.3g} (published {PUBLISHED[d]})",
                flush=True,
            )


def _by_method(rows: list[dict]) -> list[list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    return list(groups.values())


if __name__ == "__main__":
    main()
