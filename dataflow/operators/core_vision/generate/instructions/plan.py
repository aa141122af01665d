"""Which edit types each image gets: quotas over the whole run, spread over the images by their identity.

The plan is a function of the images' identities (their ``id``, or a hash of the image), the types, the number per
image, the quotas and a seed, nothing else: a resumed run, or a run over the same images in another order, plans
the same types for each image. Every image gets at most one instruction of each type.

How: the images are put in a pseudo-random order (a hash of seed and identity); the run's type slots, each type
repeated as often as its quota says, are laid out in type order and dealt to the images column by column
(slot j to image j mod n). A type's slots are consecutive and at most n, so no image gets a type twice, and each
image gets either floor or ceil(slots / n) types.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Optional, Sequence

from dataflow.core.errors import InputError


def parse_quotas(values: Sequence[str]) -> dict:
    """``["add=10", "style=5,text=2"]`` -> ``{"add": 10, "style": 5, "text": 2}``; ``InputError`` naming a bad pair
    in ``--quota``'s spelling."""
    quotas: dict = {}
    for pair in (p.strip() for value in values for p in value.split(",") if p.strip()):
        name, sep, number = pair.partition("=")
        if not sep or not name.strip() or not number.strip().isdigit():
            raise InputError(f"--quota takes TYPE=N with a whole number N >= 0, got {pair!r}")
        quotas[name.strip()] = int(number)
    return quotas


def type_counts(images: int, types: Sequence[str], per_image: int, quotas: Optional[Mapping[str, int]] = None) -> dict:
    """How many instructions of each type the run writes, in ``types`` order.

    A type named in ``quotas`` gets exactly its quota; the others share the rest of the run's ``images *
    per_image`` slots evenly (the first types in order get the remainder), none more than once per image.
    """
    if per_image < 1:
        raise InputError(f"--per-image must be at least 1, got {per_image}")
    if per_image > len(types):
        raise InputError(f"--per-image {per_image} asks for more instructions per image than there are edit types "
                         f"({len(types)}: {', '.join(types)}); an image gets at most one of each type")
    quotas = dict(quotas or {})
    unknown = [name for name in quotas if name not in types]
    if unknown:
        raise InputError(f"--quota names {unknown[0]!r}, which is not among the run's types ({', '.join(types)})")
    too_many = [f"{name}={count}" for name, count in quotas.items() if count > images]
    if too_many:
        raise InputError(f"--quota {too_many[0]} asks for more instructions of that type than there are images "
                         f"({images}); an image gets at most one of each type")
    slots = images * per_image
    if sum(quotas.values()) > slots:
        raise InputError(f"the quotas ask for {sum(quotas.values())} instructions, but {images} images x --per-image "
                         f"{per_image} give {slots}; raise --per-image or lower the quotas")
    counts = {name: quotas.get(name, 0) for name in types}
    _share(counts, [name for name in types if name not in quotas], slots - sum(quotas.values()), images)
    return counts


def _share(counts: dict, names: list, slots: int, cap: int) -> None:
    """Spread ``slots`` over ``names`` as evenly as the cap of ``cap`` each allows (slots left over stay unused)."""
    while slots > 0 and names:
        share, extra = divmod(slots, len(names))
        open_names = []
        for i, name in enumerate(names):
            give = min(share + (i < extra), cap - counts[name])
            counts[name] += give
            slots -= give
            if counts[name] < cap:
                open_names.append(name)
        if open_names == names:
            return
        names = open_names


def assign_types(identities: Sequence[str], counts: Mapping[str, int], seed: int = 0) -> list:
    """Per image (in the order of ``identities``), the tuple of its type names, in ``counts`` order."""
    n = len(identities)
    order = sorted(range(n), key=lambda i: (_rank(identities[i], seed), i))
    plans: list = [[] for _ in range(n)]
    slot = 0
    for name, count in counts.items():
        for _ in range(count):
            plans[order[slot % n]].append(name)
            slot += 1
    position = {name: i for i, name in enumerate(counts)}
    return [tuple(sorted(plan, key=position.__getitem__)) for plan in plans]


def _rank(identity: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{identity}".encode("utf-8")).hexdigest()
