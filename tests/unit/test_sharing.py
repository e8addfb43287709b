"""Shared models without a cluster: grants by namespace labels, a tenant's terms, where a
name leads (a tenant's own Flavor first), the fair order of tenants and the reserved
slots."""

from __future__ import annotations

from typing import Any, cast

import pytest

from llmloom import queues, sharing
from llmloom.informer import Informer
from llmloom.kube import CLUSTER_FLAVORS, FLAVORS, NAMESPACES, Kube
from llmloom.resources import ClusterFlavor, Flavor, LabelSelector, ObjectMeta


def selector(**spec: Any) -> LabelSelector:
    return LabelSelector.model_validate(spec)


@pytest.mark.parametrize(
    ("spec", "labels", "picked"),
    [
        ({}, {}, True),  # empty: everyone
        ({"matchLabels": {"team": "ml"}}, {"team": "ml", "x": "y"}, True),
        ({"matchLabels": {"team": "ml"}}, {"team": "web"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
        ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {"x": "1"}, False),
    ],
)
def test_a_selector_reads_as_kubernetes_reads_it(
    spec: dict[str, Any], labels: dict[str, str], picked: bool
) -> None:
    assert sharing.selects(selector(**spec), labels) is picked


def test_no_selector_grants_nobody() -> None:
    assert not sharing.selects(None, {"anything": "at all"})


def shared(name: str = "llama", model: str = "meta/llama", **spec: Any) -> ClusterFlavor:
    return ClusterFlavor.model_validate(
        {
            "metadata": {"name": name, "uid": f"u-{name}"},
            "spec": {"provider": "vllm", "model": model, "endpoint": "http://x/v1", **spec},
        }
    )


def own(namespace: str, name: str, model: str = "m") -> Flavor:
    return Flavor.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"provider": "openai", "model": model, "endpoint": "http://y/v1"},
        }
    )


def test_a_tenants_terms_are_the_default_with_its_override_field_by_field() -> None:
    flavor = shared(
        sharing={
            "default": {"weight": 2, "requestsPerMinute": 60, "tokenBudget": 1000},
            "tenants": [{"namespace": "team-a", "weight": 5, "tokensPerMinute": 900}],
        }
    )
    assert sharing.terms(flavor, "team-a") == sharing.Terms(5, 60, 900, 1000)
    assert sharing.terms(flavor, "team-b") == sharing.Terms(2, 60, None, 1000)
    assert sharing.terms(shared(), "team-b") == sharing.Terms()  # weight 1, no limits
    assert sharing.terms(own("team-a", "x"), "team-a") is None  # not shared


class Catalog(sharing.Catalog):
    """A catalog over informers filled by hand (their watches never start)."""

    def __init__(self, flavors: list[Flavor], namespaces: dict[str, dict[str, str]]) -> None:
        def informer(resource: Any, parse: Any, index: bool) -> Informer[Any]:
            no_server = cast(Kube, None)
            return Informer(
                no_server, resource, parse, {"model": sharing.model_index} if index else None
            )

        super().__init__(
            informer(FLAVORS, Flavor.model_validate, True),
            informer(CLUSTER_FLAVORS, ClusterFlavor.model_validate, True),
            informer(NAMESPACES, sharing.namespace_meta, False),
        )
        for f in flavors:
            target = self.shared if f.shared else self.flavors
            target._put(f.wire())
        for name, labels in namespaces.items():
            self.namespaces._put({"metadata": {"name": name, "labels": labels}})


GRANTED = {"team-a": {"gpu": "yes"}, "team-b": {"gpu": "yes"}, "team-c": {}}


def test_a_name_means_the_tenants_own_flavor_then_a_shared_one_granted_to_it() -> None:
    cat = Catalog(
        [
            shared("llama", tenantSelector={"matchLabels": {"gpu": "yes"}}),
            own("team-b", "llama", "their-own"),
        ],
        GRANTED,
    )
    assert cat.named("team-a", "llama").shared  # type: ignore[union-attr]
    assert cat.named("team-b", "llama").spec.model == "their-own"  # type: ignore[union-attr]
    assert cat.named("team-c", "llama") is None  # not granted
    assert cat.named("nowhere", "llama") is None  # no such namespace
    # By model id too, and in /v1/models the tenant's own hides the shared one.
    assert cat.for_model("team-a", "meta/llama").metadata.name == "llama"  # type: ignore[union-attr]
    assert cat.for_model("team-c", "meta/llama") is None
    assert [f.shared for f in cat.visible("team-b")] == [False]
    assert [f.metadata.name for f in cat.visible("team-a")] == ["llama"]
    assert cat.grantees(cat.shared.get("", "llama")) == ["team-a", "team-b"]  # type: ignore[arg-type]


def test_names_in_a_shared_model_mean_shared_models() -> None:
    big = shared("big", tenantSelector={}, failoverFlavors=["small"])
    cat = Catalog([big, shared("small", tenantSelector={}), own("team-a", "small")], GRANTED)
    assert cat.named("team-a", "small", within=big).shared  # type: ignore[union-attr]
    assert not cat.named("team-a", "small").shared  # type: ignore[union-attr]


def test_a_shared_models_work_goes_on_the_tenants_own_queue() -> None:
    assert queues.queue_name("team-a", "llama", 0, shared=True) == "llama@team-a"
    assert queues.queue_name("team-a", "llama", 5, shared=True) == "llama@team-a:high"
    assert queues.queue_name("team-a", "llama") == "team-a/llama"


# --------------------------------------------------------------------------- fair order


def take(fair: sharing.FairOrder, waiting: dict[str, int], weights: dict[str, int], n: int) -> str:
    """Who gets the next ``n`` slots, when each tenant has ``waiting`` jobs queued."""
    got = []
    for _ in range(n):
        tenant = next(t for t in fair.order(sorted(waiting)) if waiting[t])
        waiting[tenant] -= 1
        fair.served(tenant, weights.get(tenant, 1))
        got.append(tenant)
    return "".join(got)


def test_equal_weights_take_turns_whoever_queued_first() -> None:
    assert take(sharing.FairOrder(), {"a": 100, "b": 3}, {}, 8) == "ababab" + "aa"


def test_weights_divide_the_slots() -> None:
    assert take(sharing.FairOrder(), {"a": 100, "b": 100}, {"a": 3}, 8) == "abaaabaa"


def test_an_idle_tenant_banks_no_credit() -> None:
    fair = sharing.FairOrder()
    take(fair, {"a": 50}, {}, 50)  # b sent nothing meanwhile
    # b arrives: it goes first once, then they alternate (not 50 of b in a row).
    assert take(fair, {"a": 10, "b": 10}, {}, 6) == "bababa"


def test_reserved_slots_go_to_tenants_with_nothing_running() -> None:
    order = ["a", "b", "c"]
    # Slots to spare, or one tenant alone: everyone may take.
    assert sharing.eligible(order, {"a": 2}, {"a", "b"}, 4, 1) == order
    assert sharing.eligible(order, {"a": 3}, {"a"}, 4, 1) == order
    # Only the reserved slot is left and b is active: a (running three) must wait.
    assert sharing.eligible(order, {"a": 3}, {"a", "b"}, 4, 1) == ["b", "c"]
    assert sharing.eligible(order, {"a": 3}, {"a", "b"}, 4, 0) == order


def test_the_reserve_is_one_slot_in_eight_unless_the_model_says() -> None:
    assert sharing.reserve_of(shared(), 4) == 1 and sharing.reserve_of(shared(), 64) == 8
    assert sharing.reserve_of(shared(sharing={"reservedSlots": 0}), 64) == 0
    # Never every slot: a lone slot is never reserved.
    assert sharing.reserve_of(shared(sharing={"reservedSlots": 9}), 1) == 0
    assert sharing.reserve_of(own("t", "x"), 8) == 1


def test_a_namespace_is_kept_as_its_metadata() -> None:
    meta = sharing.namespace_meta({"metadata": {"name": "team-a", "labels": {"a": "b"}}})
    assert meta == ObjectMeta(name="team-a", labels={"a": "b"})
