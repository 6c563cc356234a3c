"""Carbon-nanotube geometry from the chiral indices (n, m): what the plan (a diameter range's tubes,
a campaign's atom counts), the structure builder and the analysis all need, in one place."""

from __future__ import annotations

import math

#: the graphene lattice constant (Å) at the experimental C-C bond of 1.42 Å
GRAPHENE_A = math.sqrt(3) * 1.42
#: Tersoff (1989) graphene bond (REFERENCE.md): tubes for MD are rolled at it, so their period is unstrained
TERSOFF_BOND_A = 1.4605


def tube_period_A(n: int, m: int, a: float) -> float:
    """Translational period T of an (n,m) tube (Å) for graphene lattice constant a."""
    d_r = math.gcd(2 * m + n, 2 * n + m)
    return math.sqrt(3) * a * math.sqrt(n * n + n * m + m * m) / d_r


def atoms_per_period(n: int, m: int) -> int:
    d_r = math.gcd(2 * m + n, 2 * n + m)
    return 4 * (n * n + n * m + m * m) // d_r


def tube_diameter_A(n: int, m: int, a: float) -> float:
    return a / math.pi * math.sqrt(n * n + n * m + m * m)


def tube_chiral_angle_deg(n: int, m: int) -> float:
    return math.degrees(math.atan2(math.sqrt(3) * m, 2 * n + m))


def nearest_chirality(diameter: float, angle_deg: float, a: float) -> tuple[int, int]:
    """The (n,m), n ≥ m ≥ 0, closest to a measured diameter and chiral angle.

    Distance: diameter error in units of 1 % of the diameter, plus angle error in units of 1°.
    """
    n_max = int(math.pi * diameter / a) + 2
    best, best_cost = (1, 0), math.inf
    for n in range(1, n_max + 1):
        for m in range(0, n + 1):
            cost = ((tube_diameter_A(n, m, a) - diameter) / (0.01 * diameter)) ** 2 + (
                tube_chiral_angle_deg(n, m) - angle_deg
            ) ** 2
            if cost < best_cost:
                best, best_cost = (n, m), cost
    return best


def tubes_in_diameter_range(d_min_nm: float, d_max_nm: float, a: float = GRAPHENE_A) -> list[tuple[int, int]]:
    """Every (n, m), n >= m >= 0, n >= 1, whose diameter lies in [d_min_nm, d_max_nm], by diameter then chiral
    angle (pairs of equal diameter and different angle are different tubes)."""
    out = []
    n_max = int(math.pi * 10.0 * d_max_nm / a) + 2
    for n in range(1, n_max + 1):
        for m in range(0, n + 1):
            d = tube_diameter_A(n, m, a) / 10.0
            if d_min_nm - 1e-9 <= d <= d_max_nm + 1e-9:
                out.append((n, m))
    return sorted(out, key=lambda nm: (round(tube_diameter_A(*nm, a), 9), tube_chiral_angle_deg(*nm)))


def chirality_difference(
    true: tuple[int, int], predicted: tuple[int, int], a: float = GRAPHENE_A
) -> tuple[float, float]:
    """(Δd in nm, Δθ in degrees) from the true tube to the predicted one: how far apart a confused pair is."""
    d = (tube_diameter_A(*predicted, a) - tube_diameter_A(*true, a)) / 10.0
    return d, tube_chiral_angle_deg(*predicted) - tube_chiral_angle_deg(*true)
