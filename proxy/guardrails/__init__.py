"""Guardrails: secrets and personal data kept from providers and from clients.

A guardrail (proxy.models.Guardrail) is a detector (`secrets`, `pii` or a
`regex`), an action (`block`, `redact`, `flag`) and a stage (`input`: what the
client sends, checked before anything leaves for a provider; `output`: the
answer, JSON or streamed). Guardrails attach to tenants and keys and load with
the routing catalog (proxy.catalog_loader -> index), so the request path looks
them up by tenant and key id without a query.

    detectors  a detector's patterns, and how much of a stream's tail a match
               could still be growing in
    secrets    cloud and API keys, private key blocks (after gitleaks' rules)
    pii        e-mail, phone, payment cards (Luhn), IBAN (mod 97), national ids;
               Microsoft Presidio's recognizers as well when it is installed
    regex      a guardrail's own pattern, checked and compiled once
    rules      one stage's guardrails as one scanner: find, resolve overlaps,
               redact with typed placeholders such as [REDACTED:EMAIL]
    texts      where the text is in each client API's requests and answers
    stream     output redaction of streams: only what a match could need is held
    index      the loaded guardrails by tenant and key
    run        one request's guardrails: input check, output guards, verdicts
"""
