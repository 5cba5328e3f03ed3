"""Learning which offer to show: Thompson sampling per (offer, segment), and the holdout.

Everything here is pure: counts in memory, randomness from a ``random.Random`` the caller
passes in (so a seed makes a ranking reproducible), no clock, no store. The caller loads
the counts from the store at start (``Learner.load``) and saves ``Learner.counts()``.

Propensity
    The chance that showing an offer to a shopper of a segment leads to a redemption. Each
    (offer, segment) key keeps two counts, impressions ``n`` and redemptions ``k``
    (``0 <= k <= n``). With a uniform Beta(1, 1) prior, the posterior of the propensity is
    Beta(1 + k, 1 + n - k); its mean is (1 + k) / (2 + n), so an offer never seen starts at
    one half and an offer seen often converges to k / n.

Ranking by expected value
    For each candidate, draw one propensity from its posterior (Thompson sampling) and score
    ``value * draw``; sort by score, highest first, ties by offer id. An offer with little
    evidence has a wide posterior and sometimes draws high, so it gets shown and learned; an
    offer with much evidence draws close to its true rate. On top of that, with probability
    ``exploration`` a candidate chosen uniformly at random is moved to the front: the floor
    of exploration, so every candidate is first with probability at least
    ``exploration / len(candidates)`` however bad its record. Candidates are drawn in offer-id
    order, so the same seed and the same set of candidates give the same ranking whatever the
    order they were passed in.

Which segment
    A shopper may belong to several segments; ``Learner.segment_for`` picks one per offer, and
    the caller uses that same segment to rank and to observe. It is the offer's best-known
    segment among the shopper's: the one with the most impressions for that offer (ties: the
    smallest name), so evidence accumulates where it already is instead of being spread thin.
    A shopper with no segments uses ``ALL``. Every observation under a segment is also counted
    under ``(offer, ALL)``, the offer's pooled record over every segment, which is the best
    estimate for a shopper we know nothing about and the overall rate for reports.

Memory
    At most ``max_keys`` keys, in least-recently-*observed* order: an observation (or a load)
    refreshes a key, and beyond the bound the key observed longest ago is forgotten. Reading
    (``sample``, ``mean``, ``rank``) neither creates nor refreshes a key. A forgotten key comes
    back at the prior, which is optimistic (mean one half), so an offer that had stopped being
    shown is explored again: the stated price of the bound. The alternative, refusing new keys
    once full, would stop every new campaign from learning, which is worse.

Holdout
    ``in_holdout`` puts a share of shoppers of a campaign in a control group that is not shown
    the offer, by hashing, so it is deterministic and sticky across visits and across stores
    without any shared state: BLAKE2b with the fixed key ``HOLDOUT_KEY`` and an 8-byte digest
    over ``len(campaign) as 4 bytes big-endian || campaign || shopper_id`` (both UTF-8; the
    length prefix keeps ("ab", "c") and ("a", "bc") apart). The digest read as a big-endian
    integer ``h`` is uniform on [0, 2**64); the shopper is held out when ``h < share * 2**64``.
    The key is public: it separates this use of the hash from any other, it is not a secret,
    which is what makes every store (and HQ) agree. Different campaigns hash differently, so
    the holdouts of two campaigns are independent. Changing the key reshuffles every holdout,
    hence the version in its name.

One ``Learner`` belongs to one event loop; it is not thread-safe and needs no lock there.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, TypeAlias

__all__ = [
    "ALL",
    "HOLDOUT_KEY",
    "Candidate",
    "Learner",
    "Propensity",
    "in_holdout",
]

ALL: Final = "all"
"""The pooled segment: every observation of an offer, whatever the shopper's segments."""

HOLDOUT_KEY: Final = b"moments-holdout-v1"
"""The BLAKE2b key of the holdout hash: a public domain separator, not a secret."""

Candidate: TypeAlias = tuple[str, float, str]
"""(offer id, value of a redemption, segment) for ``Learner.rank``."""

_TWO_64: Final = 2**64


@dataclass(frozen=True, slots=True)
class Propensity:
    """Impressions and redemptions of one (offer, segment), and the Beta posterior they give."""

    impressions: int = 0
    redemptions: int = 0

    def __post_init__(self) -> None:
        for name in ("impressions", "redemptions"):
            count = getattr(self, name)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {count!r}")
        if self.redemptions > self.impressions:
            raise ValueError(
                f"redemptions ({self.redemptions}) cannot exceed impressions ({self.impressions})"
            )

    @property
    def alpha(self) -> int:
        """The posterior's first parameter: 1 + redemptions."""
        return 1 + self.redemptions

    @property
    def beta(self) -> int:
        """The posterior's second parameter: 1 + impressions - redemptions."""
        return 1 + self.impressions - self.redemptions

    @property
    def mean(self) -> float:
        """The posterior mean, (1 + redemptions) / (2 + impressions)."""
        return self.alpha / (self.alpha + self.beta)

    def sample(self, rng: random.Random) -> float:
        """One draw from the posterior (the Thompson step). Nothing observed yet: the prior
        Beta(1, 1) is the uniform distribution, drawn directly (40 times cheaper)."""
        if not self.impressions:
            return rng.random()
        return rng.betavariate(self.alpha, self.beta)


_NOTHING: Final = Propensity()


class Learner:
    """Counts per (offer, segment) in memory, bounded, and the ranking they give."""

    __slots__ = ("_counts", "_max_keys")

    def __init__(self, *, max_keys: int = 10_000) -> None:
        if max_keys < 2:
            # One observation touches its key and the pooled key; fewer than two could not
            # hold both.
            raise ValueError(f"max_keys must be at least 2, got {max_keys!r}")
        self._max_keys = max_keys
        # (offer_id, segment) -> counts; observed longest ago first.
        self._counts: OrderedDict[tuple[str, str], Propensity] = OrderedDict()

    def __len__(self) -> int:
        """How many keys have counts now (at most ``max_keys``)."""
        return len(self._counts)

    def __contains__(self, key: object) -> bool:
        return key in self._counts

    # -- reading ---------------------------------------------------------------------------

    def propensity(self, offer_id: str, segment: str) -> Propensity:
        """The counts of (offer, segment); zero counts (the prior) for a key not known."""
        return self._counts.get((offer_id, segment), _NOTHING)

    def mean(self, offer_id: str, segment: str) -> float:
        """The posterior mean propensity of (offer, segment); 0.5 for a key not known."""
        return self.propensity(offer_id, segment).mean

    def sample(self, offer_id: str, segment: str, rng: random.Random) -> float:
        """One Thompson draw of the propensity of (offer, segment)."""
        return self.propensity(offer_id, segment).sample(rng)

    def segment_for(self, offer_id: str, segments: Iterable[str]) -> str:
        """The segment to rank and observe ``offer_id`` under for a shopper of ``segments``:
        the one with the most impressions of the offer, ties to the smallest name; ``ALL``
        when there are no segments."""
        best: tuple[int, str] | None = None
        for segment in segments:
            # Most impressions first, then the smallest name: compare (-impressions, name).
            here = (-self.propensity(offer_id, segment).impressions, segment)
            if best is None or here < best:
                best = here
        return ALL if best is None else best[1]

    def rank(
        self,
        candidates: Sequence[Candidate],
        rng: random.Random,
        *,
        exploration: float = 0.05,
    ) -> list[str]:
        """Offer ids, best first, by ``value * Thompson draw``; with probability
        ``exploration`` one candidate chosen uniformly is moved to the front.

        ``ValueError`` for a duplicate offer id, a negative or non-finite value, or an
        ``exploration`` outside [0, 1]."""
        if not (0.0 <= exploration <= 1.0):
            raise ValueError(f"exploration must be in [0, 1], got {exploration!r}")
        ordered = sorted(candidates, key=lambda c: c[0])
        for previous, current in pairwise(ordered):
            if previous[0] == current[0]:
                raise ValueError(f"offer {current[0]!r} is a candidate twice")
        scored: list[tuple[float, str]] = []
        for offer_id, value, segment in ordered:
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"value of offer {offer_id!r} must be finite and >= 0")
            scored.append((-value * self.sample(offer_id, segment, rng), offer_id))
        scored.sort()
        ranking = [offer_id for _, offer_id in scored]
        if ranking and rng.random() < exploration:
            ranking.insert(0, ranking.pop(rng.randrange(len(ranking))))
        return ranking

    # -- learning --------------------------------------------------------------------------

    def observe_impression(self, offer_id: str, segment: str) -> Propensity:
        """Count one showing of ``offer_id`` to a shopper of ``segment`` (and under ``ALL``);
        return the new counts of (offer, segment)."""
        return self._observe(offer_id, segment, impressions=1, redemptions=0)

    def observe_redemption(self, offer_id: str, segment: str) -> Propensity:
        """Count one redemption of ``offer_id`` by a shopper of ``segment`` (and under ``ALL``);
        return the new counts of (offer, segment).

        A redemption whose impression is not counted (its key forgotten, or counts not saved
        before a restart) brings its impression along, so redemptions never exceed
        impressions; refusing it would throw away the rarest signal there is."""
        return self._observe(offer_id, segment, impressions=0, redemptions=1)

    def _observe(
        self, offer_id: str, segment: str, *, impressions: int, redemptions: int
    ) -> Propensity:
        keys = [(offer_id, segment)] if segment == ALL else [(offer_id, ALL), (offer_id, segment)]
        result = _NOTHING
        for key in keys:  # the segment's key last: it is the most recently observed
            old = self._counts.get(key, _NOTHING)
            redeemed = old.redemptions + redemptions
            result = Propensity(max(old.impressions + impressions, redeemed), redeemed)
            self._put(key, result)
        return result

    def _put(self, key: tuple[str, str], counts: Propensity) -> None:
        self._counts[key] = counts
        self._counts.move_to_end(key)
        while len(self._counts) > self._max_keys:
            self._counts.popitem(last=False)

    # -- persistence -----------------------------------------------------------------------

    def counts(self) -> dict[tuple[str, str], Propensity]:
        """Every key's counts, observed longest ago first, for the caller to save."""
        return dict(self._counts)

    def load(self, counts: Mapping[tuple[str, str], Propensity]) -> None:
        """Replace every count by ``counts`` (as ``counts()`` returned them, oldest first);
        beyond ``max_keys``, the last ones are kept. ``ValueError`` for a key that is not a
        pair of strings or a value that is not a ``Propensity``; nothing is changed then."""
        loaded: OrderedDict[tuple[str, str], Propensity] = OrderedDict()
        for key, value in counts.items():
            if not (
                isinstance(key, tuple)
                and len(key) == 2
                and all(isinstance(part, str) for part in key)
            ):
                raise ValueError(f"a key must be (offer_id, segment), got {key!r}")
            if not isinstance(value, Propensity):
                raise ValueError(f"counts of {key!r} must be a Propensity, got {value!r}")
            loaded[key] = value
        while len(loaded) > self._max_keys:
            loaded.popitem(last=False)
        self._counts = loaded


def in_holdout(shopper_id: str, campaign: str, share: float) -> bool:
    """Whether ``shopper_id`` is in the control group of ``campaign``, which holds ``share``
    of shoppers (0 to 1): the same answer at every visit, in every store.

    ``ValueError`` for a share outside [0, 1] or an empty shopper id or campaign."""
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"share must be in [0, 1], got {share!r}")
    if not shopper_id or not campaign:
        raise ValueError("shopper_id and campaign must not be empty")
    tag = campaign.encode()
    message = len(tag).to_bytes(4, "big") + tag + shopper_id.encode()
    digest = hashlib.blake2b(message, key=HOLDOUT_KEY, digest_size=8).digest()
    # int < float compares exactly, and share * 2**64 is exact (a power-of-two scale).
    return int.from_bytes(digest, "big") < share * _TWO_64
