"""The competitions this pipeline knows. Adding one: a module with a `Competition` subclass, listed here."""

from __future__ import annotations

import difflib

from competition.competitions.base import Competition
from competition.competitions.cifar10 import Cifar10
from competition.competitions.dogs_vs_cats import DogsVsCats
from competition.competitions.imagefolder import ImageFolder
from competition.errors import CompetitionError

COMPETITIONS: dict[str, Competition] = {c.name: c for c in (DogsVsCats(), Cifar10(), ImageFolder())}


def get_competition(name: str) -> Competition:
    try:
        return COMPETITIONS[name]
    except KeyError:
        close = difflib.get_close_matches(name, COMPETITIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CompetitionError(
            f"Unknown competition {name!r}.{hint} Known: {', '.join(COMPETITIONS)}."
        ) from None


__all__ = ["COMPETITIONS", "Competition", "get_competition"]
