"""hrtemflow: atomistic simulation -> HRTEM images -> trained networks -> real micrographs."""

__version__ = "0.1.0"
