"""Selection: the hook's collections x their save configs -> what each step keeps of each tensor.

At each step begin, the collections whose save config saves that step become the active ones;
`wanted` is the set of categories adapters should capture while they save (the cheap
`Capture.wants`). Per tensor name and category, a `TensorPlan` says what to store (the raw value,
scalar reductions, plugin vector reductions) under which collections; plans are cached per name
and per set of active collections, so a step that saves what the previous one saved decides
nothing again.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..collections import WHOLE_VALUE_CATEGORIES, Collection
from ..errors import ConfigError, edit_distance
from ..modes import ModeKeys
from ..reductions import ReductionConfig, packed_kind, split_reductions
from ..save_config import SaveConfig
from ..vector_reductions import VectorReduction

#: the collections a Hook includes when it is given none
DEFAULT_COLLECTIONS = ("weights", "biases", "gradients", "losses", "metrics", "scalars")
CollectionArg = Union[str, Collection]


def user_collection(name: str, known: Iterable[str]) -> Collection:
    """An empty collection of the user's own (filled by get_collection(name).include(...) or by
    save_tensor(..., collections=name)); a name one edit away from a built-in one is most likely a
    typo, so it is warned about."""
    close = [k for k in known if edit_distance(name, k) <= 1]
    if close:
        warnings.warn(
            f"tensortap: include_collections has {name!r}, which is not a built-in collection; it is made as an "
            f'empty collection of your own. Did you mean "{close[0]}"?', UserWarning, stacklevel=4)
    return Collection(name, description="user collection")


def resolve_collections(include: Optional[Union[CollectionArg, Sequence[CollectionArg]]],
                        include_regex: Optional[Union[str, Sequence[str]]], save_all: bool,
                        known: Mapping[str, Collection]) -> List[Collection]:
    """The hook's own collections from its arguments: names of registered collections are copied
    (so the hook may change its copy), unknown names become user collections, Collection objects
    are used as given; `include_regex` adds "default", `save_all` adds "all"."""
    if include is None:
        include = [n for n in DEFAULT_COLLECTIONS if n in known]
    if isinstance(include, (str, Collection)):
        include = [include]
    out: Dict[str, Collection] = {}
    for c in include:
        if isinstance(c, Collection):
            out[c.name] = c
        elif isinstance(c, str):
            if c in known:
                k = known[c]
                out[c] = Collection(k.name, k.include_regex, k.tensor_names, None, None, k.categories, k.description)
            else:
                out[c] = user_collection(c, known)
        else:
            raise ConfigError(f"include_collections items must be names or tt.Collection, got {c!r}")
    if include_regex:
        if isinstance(include_regex, str):
            include_regex = [include_regex]
        out["default"] = Collection("default", tuple(include_regex))
    if save_all:
        out["all"] = Collection("all", (".*",))
    return list(out.values())


@dataclass(frozen=True)
class TensorPlan:
    """What to store of one tensor at steps with a given set of active collections.

    raw:          store the value itself
    reductions:   built-in scalar reductions, in canonical order, packed into one vector
    bins:         histogram bins, when "histogram" is among them
    collections:  the names of the collections the stored records belong to
    kind:         the record kind of the packed reductions
    vectors:      plugin vector reductions (one record each)
    """

    __slots__ = ("raw", "reductions", "bins", "collections", "kind", "vectors")

    raw: bool
    reductions: Tuple[str, ...]
    bins: int
    collections: Tuple[str, ...]
    kind: str
    vectors: Tuple[VectorReduction, ...]


PlanKey = Tuple[str, str, int]
#: what an unsaved step wants
NOTHING: FrozenSet[str] = frozenset()


class Selection:
    """Which of the hook's collections save the current step, and what they select.

    `collections` is the hook's own list (shared: a collection swapped into it, or one changed
    with include(), is seen after `forget()`). `categories` are those a collection selecting by
    name with no `categories` of its own may want: every built-in and registered category."""

    def __init__(self, collections: List[Collection], save_config: SaveConfig,
                 reduction_config: Optional[ReductionConfig], categories: Sequence[str]) -> None:
        self.collections = collections
        self.save_config = save_config
        self.reduction_config = reduction_config
        self._categories = tuple(categories)
        #: the collections saving the current step, a small number naming that set, and the
        #: categories adapters capture while they save
        self.active: Tuple[Collection, ...] = ()
        self.key = -1
        self.wanted: FrozenSet[str] = NOTHING
        #: (name, category, key) -> plan (None: not kept); read directly on the capture path
        self.plans: Dict[PlanKey, Optional[TensorPlan]] = {}
        self._matches: Dict[Tuple[str, str], Tuple[Collection, ...]] = {}
        self._selects: Dict[Tuple[str, str, int, bool], bool] = {}
        self._keys: Dict[Tuple[int, ...], int] = {}
        self._wanted_of: Dict[int, FrozenSet[str]] = {}

    # ---- per step ----------------------------------------------------------------------------
    def begin(self, mode: ModeKeys, mode_step: int) -> None:
        """Decide the active collections of step `mode_step` of `mode` (one should_save per
        distinct SaveConfig: most collections share the hook's)."""
        hook_sc = self.save_config
        saves: Dict[int, bool] = {}
        active = []
        for c in self.collections:
            sc = c.save_config or hook_sc
            v = saves.get(id(sc))
            if v is None:
                v = saves[id(sc)] = sc.should_save(mode, mode_step)
            if v:
                active.append(c)
        if not active:  # an unsaved step: nothing is wanted
            self.active, self.key, self.wanted = (), -1, NOTHING
            return
        self.active = tuple(active)
        ids = tuple(map(id, active))
        key = self._keys.get(ids)
        if key is None:
            key = self._keys[ids] = len(self._keys)
            self._wanted_of[key] = self._wanted_for(self.active)
        self.key, self.wanted = key, self._wanted_of[key]

    def clear(self) -> None:
        """Nothing saves until the next `begin` (a driven step ended)."""
        self.active, self.key, self.wanted = (), -1, NOTHING

    def forget(self) -> None:
        """The collections changed (regexes, names, categories, configs): decide everything again."""
        self._matches.clear()
        self.plans.clear()
        self._selects.clear()
        self._wanted_of = {k: self._wanted_for(tuple(c for c in self.collections if id(c) in ids))
                           for ids, k in self._keys.items()}
        if self.key >= 0:
            self.wanted = self._wanted_of[self.key]

    def _wanted_for(self, active: Tuple[Collection, ...]) -> FrozenSet[str]:
        """The categories adapters should capture while `active` collections save."""
        wanted = set()
        for c in active:
            wanted.add(c.name)
            if c.selects_by_name:
                wanted.update(c.categories or self._categories)
        return frozenset(wanted)

    # ---- per tensor ----------------------------------------------------------------------------
    def collections_of(self, name: str, category: str) -> Tuple[Collection, ...]:
        """Every collection of the hook that includes `name` of `category` (saving now or not)."""
        key = (name, category)
        got = self._matches.get(key)
        if got is None:
            got = self._matches[key] = tuple(c for c in self.collections if c.includes(name, category))
        return got

    def plan(self, name: str, category: str) -> Optional[TensorPlan]:
        """What to store of `name` now (cached per name and set of active collections); None: nothing."""
        key = (name, category, self.key)
        try:
            return self.plans[key]
        except KeyError:
            p = self.plans[key] = self.make_plan(name, category)
            return p

    def make_plan(self, name: str, category: str, extra_collections: Sequence[str] = (),
                  force: bool = False) -> Optional[TensorPlan]:
        """The plan of `name` now, uncached. `force`: kept even if no active collection includes it
        (a user's save_tensor), under `category` as a collection name and `extra_collections`."""
        colls = self.collections_of(name, category)
        active = [c for c in colls if any(c is a for a in self.active)]
        if not active and not force:
            return None
        rcs = [c.reduction_config or self.reduction_config for c in (active or colls)]
        raw = force or category in WHOLE_VALUE_CATEGORIES or any(rc is None or rc.save_raw_tensor for rc in rcs)
        reds, vectors = split_reductions(r for rc in rcs if rc is not None for r in rc.reductions)
        bins = max([rc.histogram_bins for rc in rcs if rc is not None] or [64])
        cnames = tuple(dict.fromkeys(tuple(c.name for c in colls) + ((category,) if force else ())
                                     + tuple(extra_collections)))
        return TensorPlan(raw, reds, bins, cnames, packed_kind(reds), tuple(vectors))

    # ---- the public query ----------------------------------------------------------------------
    def selects(self, name: Optional[str], category: Optional[str], by_name: bool) -> bool:
        """Does an active collection select `name` of `category` (None: any)? See Capture.selects."""
        if name is not None and category is not None:
            key = (name, category, self.key, by_name)
            got = self._selects.get(key)
            if got is None:
                got = self._selects[key] = any(
                    any(c is a for a in self.active) for c in self.collections_of(name, category)
                    if not (by_name and c.name == category))
            return got
        return any(_selects(c, name, category, by_name) for c in self.active)

    def may_select(self, name: Optional[str], category: Optional[str], by_name: bool) -> bool:
        """Could a collection select `name` of `category` (None: any) at some step?"""
        return any(_selects(c, name, category, by_name) for c in self.collections)


def _selects(c: Collection, name: Optional[str], category: Optional[str], by_name: bool) -> bool:
    """Does collection `c` take `name` of `category`? None: any. by_name: only through its regexes
    or tensor names, never because `category` is its own name."""
    if by_name and (not c.selects_by_name or c.name == category):
        return False
    if name is None:
        return category is None or c.wants_category(category)
    if category is None:
        return c.selects_by_name and c.matches_name(name)
    return c.includes(name, category)
