"""Models shared by many tenants (ClusterFlavors): who may use one, on what terms, in
what order their work is served, and where a tenant's name for a model leads.

One home for the rules every component applies:

- **Grants.** A ClusterFlavor's ``tenantSelector`` is a label selector over
  Namespaces: an empty one grants every namespace, an absent one none. The
  namespace's labels are read from a watch, so relabelling a namespace (or
  editing the selector) takes effect within the watch's delay.
- **Names.** A tenant's own Flavor wins over a ClusterFlavor of the same name
  (or serving the same model id): a platform team adding a shared model never
  changes where an existing tenant's requests go, and a tenant can always pin
  a name to its own endpoint. A ClusterFlavor's fallback and failover names
  refer to other ClusterFlavors.
- **Terms.** The ClusterFlavor's ``sharing.default`` and the override for the
  tenant's namespace, field by field.
- **Fair order.** Each tenant has its own queues on a shared model (its three
  priority bands); a worker takes from them in weighted fair order (stride
  scheduling): every take advances the tenant's pass by 1/weight, and the
  tenant with the lowest pass goes first. A tenant that was idle joins at the
  current pass, so it neither starves nor banks credit for the time it sent
  nothing.
- **Reserved slots.** Fair order decides who goes next, but a request that
  arrives while every slot runs another tenant's call would still wait for one
  to end. So while more than one tenant is active on a worker (sent work in
  the last ``ACTIVE_SECONDS``), its last ``reservedSlots`` slots (default: one
  in eight, at least one) go only to tenants with nothing running: an active
  tenant's next request starts at once, whatever another one floods in. A
  tenant alone uses every slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmloom.informer import Informer
from llmloom.kube import CLUSTER_FLAVORS, FLAVORS, NAMESPACES, Kube
from llmloom.resources import (
    ClusterFlavor,
    Flavor,
    LabelSelector,
    LabelSelectorRequirement,
    ObjectMeta,
)

DEFAULT_WEIGHT = 1
ACTIVE_SECONDS = 10.0
"""How long after its last job a tenant still counts as active on a worker (and so keeps
the reserved slots from another tenant's flood)."""


def default_reserve(concurrency: int) -> int:
    """Slots kept for tenants with nothing running, unless the ClusterFlavor says."""
    return max(1, concurrency // 8)


def reserve_of(flavor: Flavor, concurrency: int) -> int:
    """The reserved slots of a worker with ``concurrency`` slots on a shared model."""
    if not isinstance(flavor, ClusterFlavor) or flavor.spec.sharing.reserved_slots is None:
        return default_reserve(concurrency)
    return min(flavor.spec.sharing.reserved_slots, max(0, concurrency - 1))


def eligible(
    order: list[str], running: Mapping[str, int], active: set[str], slots: int, reserve: int
) -> list[str]:
    """The tenants (in fair ``order``) that may take the next slot of a worker with
    ``slots`` slots and ``running`` calls per tenant: all, unless several tenants are
    ``active`` and only reserved slots are left; then those with nothing running."""
    busy = sum(running.values())
    if len(active | {t for t, n in running.items() if n}) < 2 or busy < slots - reserve:
        return order
    return [t for t in order if not running.get(t)]


# --------------------------------------------------------------------------- grants


def _holds(req: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    if req.operator == "Exists":
        return present
    if req.operator == "DoesNotExist":
        return not present
    if req.operator == "In":
        return present and labels[req.key] in req.values
    return not present or labels[req.key] not in req.values  # NotIn, as Kubernetes reads it


def selects(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector picks an object with these labels (None picks nothing; an
    empty selector picks everything)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    return all(_holds(r, labels) for r in selector.match_expressions)


def granted(flavor: ClusterFlavor, namespace: ObjectMeta | None) -> bool:
    """Whether a tenant (its Namespace's metadata; None: no such namespace) may use a
    shared model."""
    return namespace is not None and selects(flavor.spec.tenant_selector, namespace.labels)


@dataclass(frozen=True)
class Terms:
    """One tenant's weight and limits on one shared model (None: no limit)."""

    weight: int = DEFAULT_WEIGHT
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    token_budget: int | None = None


def terms(flavor: Flavor, tenant: str) -> Terms | None:
    """A tenant's terms on a shared model; None for a tenant's own Flavor."""
    if not isinstance(flavor, ClusterFlavor):
        return None
    sharing = flavor.spec.sharing
    merged = sharing.default.model_dump()
    for override in sharing.tenants:
        if override.namespace == tenant:
            merged.update(override.model_dump(exclude={"namespace"}, exclude_none=True))
    return Terms(
        weight=merged["weight"] or DEFAULT_WEIGHT,
        requests_per_minute=merged["requests_per_minute"],
        tokens_per_minute=merged["tokens_per_minute"],
        token_budget=merged["token_budget"],
    )


# --------------------------------------------------------------------------- names


def namespace_meta(obj: Mapping[str, Any]) -> ObjectMeta:
    """A Namespace object as the catalog keeps it: its metadata."""
    return ObjectMeta.model_validate(obj.get("metadata") or {})


def model_index(flavor: Flavor) -> tuple[str, str]:
    """The key of the catalog's by-model index."""
    return (flavor.metadata.namespace, flavor.spec.model)


class Catalog:
    """The models a tenant can reach, from watch caches: its namespace's Flavors, then
    the ClusterFlavors granted to it. No API-server request per lookup."""

    def __init__(
        self,
        flavors: Informer[Flavor],
        shared: Informer[ClusterFlavor],
        namespaces: Informer[ObjectMeta],
    ) -> None:
        self.flavors, self.shared, self.namespaces = flavors, shared, namespaces

    @classmethod
    def watching(cls, kube: Kube, namespace: str | None = None) -> Catalog:
        """A catalog kept by three watches (started by ``start``): the Flavors of one
        namespace (None: all), every ClusterFlavor, and every Namespace's labels."""
        return cls(
            Informer(kube, FLAVORS, Flavor.model_validate, {"model": model_index}, namespace),
            Informer(kube, CLUSTER_FLAVORS, ClusterFlavor.model_validate, {"model": model_index}),
            Informer(kube, NAMESPACES, namespace_meta),
        )

    def start(self) -> None:
        for informer in self._informers:
            informer.start()

    async def stop(self) -> None:
        for informer in self._informers:
            await informer.stop()

    async def wait_synced(self, seconds: float | None = None) -> None:
        """Until each watch has listed its objects once (TimeoutError after ``seconds``)."""
        waits = asyncio.gather(*(i.synced.wait() for i in self._informers))
        await asyncio.wait_for(waits, seconds)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self._informers)

    @property
    def _informers(self) -> tuple[Informer[Any], ...]:
        return (self.flavors, self.shared, self.namespaces)

    def granted(self, flavor: ClusterFlavor, tenant: str) -> bool:
        return granted(flavor, self.namespaces.get("", tenant))

    def shared_named(self, tenant: str, name: str) -> ClusterFlavor | None:
        """The ClusterFlavor of this name, if the tenant is granted it."""
        found = self.shared.get("", name)
        return found if found is not None and self.granted(found, tenant) else None

    def named(self, tenant: str, name: str, within: Flavor | None = None) -> Flavor | None:
        """The flavor a name means to a tenant: its own Flavor, else a granted
        ClusterFlavor. Names written in a ClusterFlavor (``within``: its fallback and
        failover) mean ClusterFlavors only."""
        if within is None or not within.shared:
            own = self.flavors.get(tenant, name)
            if own is not None:
                return own
        return self.shared_named(tenant, name)

    def for_model(self, tenant: str, model: str) -> Flavor | None:
        """The flavor a requested model means to a tenant: by name, else by model id (its
        own flavors first, then shared ones; the first by name when several serve it)."""
        named = self.named(tenant, model)
        if named is not None:
            return named
        for flavor in self.flavors.by("model", (tenant, model)):
            return flavor
        for shared in self.shared.by("model", ("", model)):
            if self.granted(shared, tenant):
                return shared
        return None

    def visible(self, tenant: str) -> list[Flavor]:
        """Every flavor a tenant can use: its own, then the shared ones granted to it that
        no own flavor of the same name hides."""
        own = self.flavors.in_namespace(tenant)
        names = {f.metadata.name for f in own}
        shared = [
            f
            for f in self.shared.in_namespace("")
            if f.metadata.name not in names and self.granted(f, tenant)
        ]
        return [*own, *shared]

    def grantees(self, flavor: ClusterFlavor) -> list[str]:
        """The namespaces a shared model is granted to now, by name."""
        return [meta.name for meta in self.namespaces.in_namespace("") if granted(flavor, meta)]


# --------------------------------------------------------------------------- fair order


class FairOrder:
    """Weighted fair order among the tenants of one shared model (stride scheduling), as
    one worker takes their work. Not thread-safe: one taker uses it."""

    def __init__(self) -> None:
        self.passes: dict[str, float] = {}
        self.now = 0.0
        """The pass of the last tenant served: the virtual time."""

    def order(self, tenants: list[str]) -> list[str]:
        """The tenants in the order their queues should be tried: lowest pass first (an
        idle or new tenant counts as the current virtual time), ties by name."""
        return sorted(tenants, key=lambda t: (max(self.passes.get(t, self.now), self.now), t))

    def served(self, tenant: str, weight: int = DEFAULT_WEIGHT) -> None:
        """One job of ``tenant`` was taken."""
        start = max(self.passes.get(tenant, self.now), self.now)
        self.now = start
        self.passes[tenant] = start + 1.0 / max(1, weight)
