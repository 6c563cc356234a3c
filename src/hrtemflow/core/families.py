"""The three structure families and the facts about them that more than one stage needs.

The family list is written here once; the config schema, the plan, the id grammar, the MD and
imaging stages and the figures take it from here.
"""

from __future__ import annotations

FAMILIES = ("nanoalloy", "cnt", "amorphous")
#: nanoalloy chemical orderings, in the order classes are numbered
ORDERINGS = ("core-shell", "janus", "disordered")
#: the label a figure titles each family's images with
FIGURE_LABEL = {"nanoalloy": "ordering", "cnt": "chirality", "amorphous": "density_g_cm3"}
#: the families whose MD is carbon (Tersoff), the others are Ag/Co (TB-SMA as eam/fs)
CARBON = ("cnt", "amorphous")
#: the families whose objects can lie on a support film (an amorphous-family structure under them)
FILM_FAMILIES = ("nanoalloy", "cnt")
