"""Embeddings of a list, cached per item: the upstream is asked only for the items it has not answered,
all of them in one request; the answer keeps the request's order, indexes and the items' usage summed;
identical items in flight are asked once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.openai.embeddings import shares
from tests.openai.conftest import MakeGateway, Sdk
from tests.support.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.redis

EMBEDDINGS = "/v1/embeddings"


def inputs_sent(scripted: ScriptedUpstream) -> list[list[Any]]:
    """The inputs of each embeddings request the upstream received, in the order it received them."""
    return [call.body["input"] for call in scripted.calls if call.path == EMBEDDINGS]


async def test_a_list_asks_the_upstream_only_for_the_items_it_has_not_answered(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    """["a", "b", "c"] then ["a", "b", "d"]: the upstream got a, b and c in one request, then d alone;
    a's and b's vectors are the same in both answers."""
    api = sdk(await make_gateway(scripted.url))
    first = await api.embeddings.with_raw_response.create(model="m", input=["a", "b", "c"])
    second = await api.embeddings.with_raw_response.create(model="m", input=["a", "b", "dd"])
    sent = inputs_sent(scripted)
    assert [sorted(batch) for batch in sent] == [["a", "b", "c"], ["dd"]]
    one, two = first.parse(), second.parse()
    assert [e.index for e in two.data] == [0, 1, 2]
    assert [e.embedding for e in two.data[:2]] == [e.embedding for e in one.data[:2]]
    # The scripted upstream's vector starts with the text's length: each item is in its own place.
    assert [e.embedding[0] for e in two.data] == [1.0, 1.0, 2.0]
    # Its usage is one token per text: the first request's 3 shared by three texts, the second's 1.
    assert (one.usage.prompt_tokens, two.usage.prompt_tokens) == (3, 3)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "MISS")
    assert second.headers["Cache-Status"].endswith("detail=cached-2-of-3")
    again = await api.embeddings.with_raw_response.create(model="m", input=["dd", "a"])
    assert again.headers["X-Cache"] == "HIT"
    assert [e.embedding for e in again.parse().data] == [two.data[2].embedding, one.data[0].embedding]
    assert len(inputs_sent(scripted)) == 2


async def test_one_input_and_a_list_of_it_share_an_entry(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    api = sdk(await make_gateway(scripted.url))
    single = await api.embeddings.create(model="m", input="alone")
    listed = await api.embeddings.with_raw_response.create(model="m", input=["alone"])
    assert listed.headers["X-Cache"] == "HIT"
    assert listed.parse().data[0].embedding == single.data[0].embedding
    assert inputs_sent(scripted) == [["alone"]]


async def test_identical_items_in_flight_are_asked_once(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    """Two lists at once, over two replicas, sharing an item: the upstream is asked for each text once."""
    one = sdk(await make_gateway(scripted.url))
    api = sdk(await make_gateway(scripted.url))
    left, right = await asyncio.gather(
        one.embeddings.create(model="m", input=["x", "shared"]),
        api.embeddings.create(model="m", input=["shared", "zz"]),
    )
    assert left.data[1].embedding == right.data[0].embedding
    assert sorted(text for batch in inputs_sent(scripted) for text in batch) == ["shared", "x", "zz"]


async def test_a_list_over_the_item_bound_is_a_400(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url, max_batch_items=3)
    response = await client.post(
        EMBEDDINGS, json={"model": "m", "input": ["a", "b", "c", "d"]}, headers={"Authorization": "Bearer k"}
    )
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "input"
    assert inputs_sent(scripted) == []


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [(9, [3, 3, 3], [3, 3, 3]), (10, [1, 1, 1], [4, 3, 3]), (7, [10, 1, 3], [5, 1, 1]), (3, [0, 0], [2, 1])],
)
def test_a_batchs_tokens_are_shared_by_length_and_add_up(
    total: int, weights: list[int], expected: list[int]
) -> None:
    assert shares(total, weights) == expected
    assert sum(shares(total, weights)) == total
