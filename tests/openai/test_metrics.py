"""The gateway's metrics: tokens served from the cache (from the stored usage), the upstream's time
to first token, requests by route and X-Cache."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.openai.conftest import Client, MakeGateway, Sdk
from tests.support.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.redis

ASKED: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "count"}], "temperature": 0}


async def samples(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await client.get("/metrics")).text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_hits_count_the_tokens_they_saved_and_misses_the_upstreams_ttft(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    api = sdk(client)
    before = await samples(client)
    assert before[("predcache_llm_cached_tokens_total", (("kind", "prompt"),))] == 0
    await api.chat.completions.create(**ASKED)  # a JSON miss: usage 7 prompt, 4 completion tokens
    await api.chat.completions.create(**ASKED)  # a hit
    stream = await api.chat.completions.create(stream=True, **ASKED)  # a hit, replayed
    assert [chunk async for chunk in stream]
    fresh = {**ASKED, "messages": [{"role": "user", "content": "streamed miss"}]}
    stream = await api.chat.completions.create(stream=True, **fresh)  # a streamed miss
    assert [chunk async for chunk in stream]
    after = await samples(client)
    assert after[("predcache_llm_cached_tokens_total", (("kind", "prompt"),))] == 14
    assert after[("predcache_llm_cached_tokens_total", (("kind", "completion"),))] == 8
    assert after[("predcache_llm_upstream_ttft_seconds_count", ())] == 1
    requests = {
        labels: value for (name, labels), value in after.items() if name == "predcache_llm_requests_total"
    }
    assert requests == {
        (("cache", "HIT"), ("route", "chat/completions")): 2,
        (("cache", "MISS"), ("route", "chat/completions")): 2,
    }
