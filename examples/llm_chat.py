"""A streamed chat completion through predcache's LLM gateway with the official openai SDK:
`.venv/bin/python -m examples.llm_chat [--base-url URL] [PROMPT]`. Prints the tokens as they arrive,
then the X-Cache header and the time to the first token and to the end.

Run it twice: the first answer is generated (X-Cache: MISS), the second replayed from the cache
(X-Cache: HIT), the same text.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import openai


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("prompt", nargs="?", default="Name three colours of the rainbow.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="predcache's /v1")
    parser.add_argument("--api-key", default="sk-walkthrough", help="sent as Authorization: Bearer KEY")
    parser.add_argument("--max-tokens", type=int, default=60)
    args = parser.parse_args(argv)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    started = time.perf_counter()
    first_token_s = None
    with client.chat.completions.with_streaming_response.create(
        model="smollm2",
        messages=[{"role": "user", "content": args.prompt}],
        max_tokens=args.max_tokens,
        temperature=0,
        stream=True,
    ) as response:
        for chunk in response.parse():
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                first_token_s = first_token_s or time.perf_counter() - started
                print(text, end="", flush=True)
        headers = response.headers
    total_s = time.perf_counter() - started
    print(flush=True)  # the answer's line ends before the headers' line, which goes to stderr
    print(
        f"X-Cache: {headers.get('X-Cache')}  Age: {headers.get('Age')}  "
        f"first token: {1000 * (first_token_s or total_s):.1f} ms  whole answer: {1000 * total_s:.1f} ms",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
