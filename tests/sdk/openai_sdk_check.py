#!/usr/bin/env python3
"""Talks to a boocontrol gateway with the official OpenAI Python SDK.

Checks, in order: list models, a chat completion, a streamed chat completion, embeddings, and that
an unknown provider surfaces as ``openai.BadRequestError`` (HTTP 400, code ``model_not_found``).

    python3 -m pip install openai
    python3 tests/sdk/openai_sdk_check.py --base-url http://127.0.0.1:9503/v1 \
        --chat-model sam-desktop/qwen3-coder-30b-a3b --embed-model embedding/bge-m3

Exits 0 when every check passed, 1 otherwise (one line per check on stdout), 2 on bad usage.
``tests/openai_sdk.rs`` runs it against fleet-sim behind an in-process gateway.
"""

import argparse
import sys
import traceback

try:
    import openai
except ImportError:  # the Rust test checks this first and skips; keep a clear message anyway
    print("the `openai` package is not installed: python3 -m pip install openai", file=sys.stderr)
    sys.exit(2)


def check_models(client, args):
    ids = [m.id for m in client.models.list()]
    for want in (args.chat_model, args.embed_model):
        assert want in ids, f"{want!r} missing from /v1/models: {ids}"
    owners = {m.id: m.owned_by for m in client.models.list()}
    provider = args.chat_model.split("/", 1)[0]
    assert owners[args.chat_model] == provider, f"owned_by {owners[args.chat_model]!r} != {provider!r}"
    return f"{len(ids)} models"


def check_chat(client, args):
    r = client.chat.completions.create(
        model=args.chat_model,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=8,
    )
    assert r.object == "chat.completion", r.object
    assert len(r.choices) == 1, r.choices
    text = r.choices[0].message.content
    assert text, f"empty content: {r}"
    assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason
    assert r.usage is not None and r.usage.completion_tokens > 0, r.usage
    return f"{r.usage.completion_tokens} tokens: {text[:40]!r}"


def check_stream(client, args):
    stream = client.chat.completions.create(
        model=args.chat_model,
        messages=[{"role": "user", "content": "Count to ten."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk.object
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta and c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert chunks >= 3, f"only {chunks} chunks"
    assert parts, "no content deltas"
    assert finish in ("stop", "length"), f"finish_reason {finish!r}"
    assert usage is not None and usage.completion_tokens == len(parts), (usage, len(parts))
    return f"{chunks} chunks, {len(parts)} content deltas, finish={finish}"


def check_embeddings(client, args):
    r = client.embeddings.create(model=args.embed_model, input=["hello", "world"])
    assert len(r.data) == 2, r.data
    dims = {len(d.embedding) for d in r.data}
    assert len(dims) == 1 and dims.pop() > 0, "embeddings have different or zero widths"
    assert [d.index for d in r.data] == [0, 1], [d.index for d in r.data]
    assert r.data[0].embedding != r.data[1].embedding, "different inputs gave the same vector"
    return f"2 vectors of {len(r.data[0].embedding)} floats"


def check_bad_request(client, args):
    try:
        client.chat.completions.create(
            model="no-such-provider/" + args.chat_model.split("/", 1)[1],
            messages=[{"role": "user", "content": "hi"}],
        )
    except openai.BadRequestError as e:
        assert e.status_code == 400, e.status_code
        assert e.code == "model_not_found", f"code {e.code!r}"
        assert "no-such-provider" in str(e), str(e)
        return f"BadRequestError: {e.code}"
    raise AssertionError("an unknown provider did not raise openai.BadRequestError")


CHECKS = [
    ("models.list", check_models),
    ("chat.completions", check_chat),
    ("chat.completions stream", check_stream),
    ("embeddings", check_embeddings),
    ("400 -> BadRequestError", check_bad_request),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", required=True, help="gateway base URL ending in /v1")
    p.add_argument("--chat-model", required=True, help="composite chat model id, provider/model")
    p.add_argument("--embed-model", required=True, help="composite embedding model id")
    p.add_argument("--api-key", default="sk-no-key", help="client key, when the gateway requires one")
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=60)
    failed = 0
    for name, check in CHECKS:
        try:
            detail = check(client, args)
            print(f"ok   {name}: {detail}")
        except Exception as e:  # report every check, then fail
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stdout)
    print(f"openai {openai.__version__}: {len(CHECKS) - failed} of {len(CHECKS)} SDK checks ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
