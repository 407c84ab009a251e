"""What guardrails add to a request: CPU time per 4 KB of prompt, and per 4 KB streamed.

    python bench/guardrails.py                 # secrets, pii and a regex, all on; 2,000 rounds
    python bench/guardrails.py --rounds 10000

The input check is what a request with input guardrails pays before it is
forwarded (proxy.guardrails.run.GuardrailRun.check_input): every text of a
chat request with 4 KB of prompt scanned by the three kinds, the two matches
in it redacted (so the body is copied once). The output figure is a 4 KB
answer streamed as OpenAI chat chunks of 4 characters (about one token each)
through the stream guard, held-back tails included. Both are CPU time on
this process, measured the same way with no guardrail (the baseline is the
parse of the request body, which every request pays anyway). Nothing here
needs a database or a network.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PARAGRAPH = (
    "Our deployment pipeline builds the service, runs the test suite against a fresh database, and "
    "publishes the image when every check passes. In 2024 the team moved 1500 jobs to the new runners; "
    "the average build now takes 4.5 minutes. Please review the function below and explain the bug:\n"
    "def total(items):\n    return sum(i.price * i.count for i in items if i.count > 0)\n"
)


def prompt_of(size: int) -> str:
    text = ""
    while len(text) < size:
        text += PARAGRAPH
    # Two things to redact: a key pasted by mistake and an e-mail address.
    middle = len(text) // 2
    return (text[:middle] + " AKIAIOSFODNN7EXAMPLE, ask ops@example.com. " + text[middle:])[:size]


def cpu_us(work: "object", rounds: int) -> float:
    samples = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(rounds):
            work()  # type: ignore[operator]
        samples.append((time.process_time() - start) / rounds * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096, help="Prompt bytes (default 4 KB).")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
    import orjson

    from gateway.kernel.context import TenantContext
    from proxy.apis.chat import chat_call
    from proxy.dialects import Dialect
    from proxy.guardrails.index import GuardrailRow, guardrail_index
    from proxy.guardrails.run import GuardrailRun

    rows = [
        GuardrailRow(1, "secrets", "secrets", "", "redact", "input"),
        GuardrailRow(2, "pii", "pii", "", "redact", "input"),
        GuardrailRow(3, "ids", "regex", r"EMP-\d{6}", "redact", "input"),
        GuardrailRow(4, "secrets-out", "secrets", "", "redact", "output"),
        GuardrailRow(5, "pii-out", "pii", "", "redact", "output"),
        GuardrailRow(6, "ids-out", "regex", r"EMP-\d{6}", "redact", "output"),
    ]
    caller = guardrail_index(rows, [(row.id, 1) for row in rows], []).for_caller(1, 1)
    assert caller is not None
    ctx = TenantContext(tenant_id=1, tenant_slug="bench", tenant_active=True, key_id=1, key_prefix="sk-gw-bench")
    prompt = prompt_of(args.size)
    raw = orjson.dumps(
        {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]}
    )

    def parse_only() -> None:
        chat_call(raw)

    def parse_and_check() -> None:
        GuardrailRun(ctx, Dialect.CHAT, "r", caller).check_input(chat_call(raw))

    checked = GuardrailRun(ctx, Dialect.CHAT, "r", caller).check_input(chat_call(raw))
    assert "[REDACTED:AWS_ACCESS_KEY]" in checked.body["messages"][1]["content"]

    pieces = [prompt[i : i + 4] for i in range(0, len(prompt), 4)]
    chunks = [
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":'
        + orjson.dumps(piece)
        + b'},"finish_reason":null}]}\n\n'
        for piece in pieces
    ]
    chunks.append(
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )

    def stream() -> None:
        guard = GuardrailRun(ctx, Dialect.CHAT, "r", caller).output_stream()
        assert guard is not None
        for chunk in chunks:
            guard.raw([chunk])
        guard.raw_close()

    stream_rounds = max(args.rounds // 20, 20)
    base = cpu_us(parse_only, args.rounds)
    total = cpu_us(parse_and_check, args.rounds)
    streamed = cpu_us(stream, stream_rounds)
    kb = args.size / 1024
    pii = next(rule.detector for rule in caller.input.rules if rule.kind == "pii")
    presidio = "on" if getattr(pii, "analyzer", None) is not None else "off"
    print(f"prompt {args.size} bytes, guardrails: secrets, pii (Presidio {presidio}), regex")
    print(f"  parse alone            {base:8.1f} us")
    added = total - base
    print(f"  parse + input check    {total:8.1f} us   -> input guardrails add {added:.0f} us per {kb:g} KB")
    per_chunk = streamed / len(chunks)
    print(
        f"  stream, {len(chunks)} chunks   {streamed:8.1f} us   -> {per_chunk:.1f} us per chunk, {streamed / kb:.0f} us per KB"
    )


if __name__ == "__main__":
    main()
