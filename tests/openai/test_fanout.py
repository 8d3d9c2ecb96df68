"""One generation, every listener: a streamed request identical to a generation in progress joins it,
on the same replica and on another (three apps over one Redis), gets every event so far at once, the
rest live, and the same end; the upstream sees one request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from service.openai.sse import SseDecoder
from tests.openai.conftest import API_KEY, Client, MakeGateway, Sdk
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.scripted_upstream import Script, ScriptedUpstream
from tests.test_api import keys_of

pytestmark = pytest.mark.redis

CHAT = "/v1/chat/completions"
WORDS = tuple(f" w{i}" for i in range(30))
EVENT_GAP_S = 0.1  # 30 words 0.1 s apart: a generation of about 3 s


def asked(content: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], "temperature": 0}


@dataclass
class Listened:
    """What one streaming client saw: when its first event came (seconds after it asked), how many
    events came with it (within 10 ms), the text, and whether its stream ended properly."""

    first_s: float = 0.0
    first_burst: int = 0
    text: str = ""
    cache_status: str = ""
    done: bool = False  # data: [DONE] came
    broken: bool = False  # the connection ended before the stream's end
    times: list[float] = field(default_factory=list)


async def listen(client: Client, body: dict[str, Any], *, leave_after: int | None = None) -> Listened:
    """A streaming request read with aiohttp, each event timed as it arrives (the SDK's own cost on
    this busy loop would blur milliseconds)."""
    heard = Listened()
    decoder = SseDecoder()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    started = time.perf_counter()
    async with client.post(CHAT, json={**body, "stream": True}, headers=headers) as response:
        heard.cache_status = response.headers.get("Cache-Status", "")
        try:
            async for data in response.content.iter_any():
                now = time.perf_counter() - started
                for event in decoder.feed(data):
                    heard.times.append(now)
                    if event.is_done:
                        heard.done = True
                        continue
                    for choice in orjson.loads(event.data).get("choices", []):
                        heard.text += choice["delta"].get("content") or ""
                if leave_after is not None and len(heard.times) >= leave_after:
                    response.close()
                    break
        except aiohttp.ClientPayloadError:
            heard.broken = True
    if heard.times:
        heard.first_s = heard.times[0]
        heard.first_burst = sum(t - heard.first_s < 0.01 for t in heard.times)
    return heard


async def replicas(make_gateway: MakeGateway, url: str, redis_url: str, count: int = 3) -> list[Client]:
    return [await make_gateway(url, redis_url=redis_url) for _ in range(count)]


async def test_a_stream_joined_1s_into_a_3s_generation_gets_its_first_event_within_50ms_anywhere(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis_url: str, sdk: Sdk
) -> None:
    """Joiners on the generating replica and on another get, within 50 ms, every event so far at once,
    then the rest live; a JSON request on a third gets the JSON at the end; all the same text, one
    upstream request."""
    one, two, three = await replicas(make_gateway, scripted.url, redis_url)
    scripted.script = Script(words=WORDS, event_delay_s=EVENT_GAP_S)
    body = asked("join me")
    leader = asyncio.create_task(listen(one, body))
    await asyncio.sleep(0.5)
    waiting = asyncio.create_task(sdk(three).chat.completions.create(**body))
    await asyncio.sleep(0.5)
    same, other = await asyncio.gather(listen(one, body), listen(two, body))
    first, answer = await leader, await waiting
    assert first.done
    assert first.text == same.text == other.text == answer.choices[0].message.content == "".join(WORDS)
    for joiner in (same, other):
        assert joiner.done
        assert joiner.first_s < 0.05, joiner.times[:3]
        # About ten events had been generated: they came at once, the rest one gap apart.
        assert joiner.first_burst >= 5
        assert joiner.times[-1] - joiner.first_s > 1.0
        assert "collapsed" in joiner.cache_status
    assert scripted.count() == 1


async def test_a_generation_cut_halfway_ends_abnormally_for_every_listener_and_is_not_stored(
    scripted: ScriptedUpstream,
    make_gateway: MakeGateway,
    redis_url: str,
    redis: Redis,
    model_version: str,
    sdk: Sdk,
) -> None:
    """Three listeners on two replicas: all see the broken end; nothing is stored; the next request
    goes upstream."""
    one, two = await replicas(make_gateway, scripted.url, redis_url, count=2)
    scripted.script = Script(words=WORDS, fault="cut", cut_after=15, event_delay_s=EVENT_GAP_S)
    body = asked("cut me")
    leader = asyncio.create_task(listen(one, body))
    await asyncio.sleep(0.5)
    heard = await asyncio.gather(leader, listen(one, body), listen(two, body))
    for listener in heard:
        assert listener.broken
        assert not listener.done
        assert listener.text == "".join(WORDS[:15])
    assert await keys_of(redis, model_version) == []
    scripted.script = Script()
    again = await sdk(two).chat.completions.with_raw_response.create(**body)
    assert again.headers["X-Cache"] == "MISS"
    assert scripted.count() == 2


async def test_when_every_listener_hangs_up_the_generation_completes_and_is_stored(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis_url: str, sdk: Sdk
) -> None:
    one, two = await replicas(make_gateway, scripted.url, redis_url, count=2)
    scripted.script = Script(words=WORDS[:10], event_delay_s=0.05)
    body = asked("leave me")
    leader = asyncio.create_task(listen(one, body, leave_after=2))
    await asyncio.sleep(0.2)
    joiner = await listen(two, body, leave_after=2)
    await leader
    assert joiner.first_burst >= 2
    for _ in range(60):  # the generation ends about 0.5 s after it started
        answer = await sdk(two).chat.completions.with_raw_response.create(**body)
        if answer.headers["X-Cache"] == "HIT":
            break
        await asyncio.sleep(0.05)
    assert answer.headers["X-Cache"] == "HIT"
    assert answer.parse().choices[0].message.content == "".join(WORDS[:10])
    assert scripted.count() == 1


async def test_joiners_past_the_stream_readers_get_the_stored_answer_at_the_end(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis_url: str, sdk: Sdk
) -> None:
    """One stream reader on the joining replica: the second generation it would follow is not
    followed; its listener gets the whole answer replayed once stored, as without the relay."""
    one = await make_gateway(scripted.url, redis_url=redis_url)
    two = await make_gateway(scripted.url, redis_url=redis_url, stream_readers=1)
    scripted.script = Script(words=WORDS[:10], event_delay_s=0.1)
    bodies = [asked("first"), asked("second")]
    leaders = [asyncio.create_task(listen(one, body)) for body in bodies]
    await asyncio.sleep(0.3)
    heard = await asyncio.gather(*(listen(two, body) for body in bodies))
    await asyncio.gather(*leaders)
    # Whichever came first took the reader; the other waited for the end of its generation.
    followed, replayed = sorted(heard, key=lambda listener: listener.first_s)
    assert followed.text == replayed.text == "".join(WORDS[:10])
    assert followed.first_s < 0.2 < replayed.first_s
    assert scripted.count() == 2


async def test_a_join_across_replicas_over_a_redis_cluster(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis_cluster: RedisClusterNodes
) -> None:
    """The same over a 6-node Redis Cluster: the stream lives on the entry's node, the join request
    goes over the sharded events channel."""
    one, two = await replicas(make_gateway, scripted.url, redis_cluster.url, count=2)
    scripted.script = Script(words=WORDS[:20], event_delay_s=0.05)
    body = asked("join me in a cluster")
    leader = asyncio.create_task(listen(one, body))
    await asyncio.sleep(0.5)
    other = await listen(two, body)
    first = await leader
    assert first.done
    assert other.done
    assert other.text == first.text == "".join(WORDS[:20])
    assert other.first_s < 0.2
    assert other.first_burst >= 3
    assert scripted.count() == 1
