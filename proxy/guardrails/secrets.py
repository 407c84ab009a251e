"""Secrets: cloud and API keys and private key blocks, after gitleaks' rules.

Each pattern is the shape gitleaks describes for that credential (prefix,
alphabet, length), bounded so a stream never has to hold more than one match's
length. Placeholders name the credential: [REDACTED:AWS_ACCESS_KEY].
"""

import functools
import re

from proxy.guardrails.detectors import Pattern, PatternDetector

_PEM_BEGIN = "-----BEGIN"
_PEM_LABEL = r"[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"
_PEM_MAX = 8000  # base64 of a 4096-bit RSA key is about 3,200 characters


def _pem_live(text: str) -> bool:
    """From `-----BEGIN` on: False once the header line is complete and names
    no private key, or once the block's END line is complete."""
    header_end = text.find("-----", len(_PEM_BEGIN))
    if header_end == -1:
        return len(text) < len(_PEM_BEGIN) + 120
    if "PRIVATE KEY" not in text[:header_end]:
        return False
    end = text.find("-----END", header_end + 5)
    return end == -1 or text.find("-----", end + 8) == -1


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


@functools.cache
def secret_patterns() -> tuple[Pattern, ...]:
    return (
        Pattern(
            "AWS_ACCESS_KEY",
            _compile(r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b"),
            window=22,
            word_start=True,
            anchors=("A3T", "AKIA", "ASIA", "ABIA", "ACCA"),
        ),
        # A secret key is 40 base64 characters with nothing of its own to
        # recognise it by: gitleaks needs the name before it, and so does this.
        Pattern(
            "AWS_SECRET_KEY",
            _compile(
                r"""(?i)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)["']?\s{0,5}[:=]\s{0,5}["']?"""
                r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
            ),
            window=90,
            anchors=("aws", "secret"),
            anchors_ignore_case=True,
            group=1,
            word_start=True,
            needs=lambda text: "secret" in text.lower(),
        ),
        Pattern(
            "GCP_API_KEY",
            _compile(r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
            window=41,
            anchors=("AIza",),
            word_start=True,
        ),
        # A service account key file: its private_key is a PEM block (below);
        # its private_key_id names the key.
        Pattern(
            "GCP_SERVICE_ACCOUNT_KEY",
            _compile(r'"private_key_id"\s{0,5}:\s{0,5}"([a-f0-9]{40})"'),
            window=70,
            anchors=('"private_key_id"',),
            group=1,
        ),
        Pattern(
            "GITHUB_TOKEN",
            _compile(r"(?:gh[pousr]_[0-9A-Za-z]{36}|github_pat_[0-9A-Za-z_]{82})(?![0-9A-Za-z_])"),
            window=95,
            anchors=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            word_start=True,
        ),
        Pattern(
            "SLACK_TOKEN",
            _compile(
                r"(?:xox[abposre]-[0-9A-Za-z-]{10,250}|xapp-\d-[A-Z0-9]{1,32}-\d{1,20}-[a-z0-9]{1,128})"
                r"(?![0-9A-Za-z-])"
            ),
            window=256,
            anchors=("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-", "xapp-"),
            word_start=True,
        ),
        Pattern(
            "SLACK_WEBHOOK",
            _compile(
                r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}(?![A-Za-z0-9+/])"
            ),
            window=100,
            anchors=("https://hooks.slack.com/",),
        ),
        Pattern(
            "STRIPE_KEY",
            _compile(r"[sr]k_(?:test|live|prod)_[0-9A-Za-z]{10,99}(?![0-9A-Za-z])"),
            window=112,
            anchors=("sk_test_", "sk_live_", "sk_prod_", "rk_test_", "rk_live_", "rk_prod_"),
            word_start=True,
        ),
        Pattern(
            "ANTHROPIC_KEY",
            _compile(r"sk-ant-(?:api|admin|oat|ort|sid)\d{2}-[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])"),
            window=270,
            anchors=("sk-ant-",),
            word_start=True,
        ),
        # Project, service account and admin keys, and the two older shapes
        # (with OpenAI's T3BlbkFJ marker, and 48 characters).
        Pattern(
            "OPENAI_KEY",
            _compile(
                r"sk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,250}"
                r"|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48})(?![A-Za-z0-9_-])"
            ),
            window=265,
            anchors=("sk-",),
            word_start=True,
        ),
        # A whole block; or, when it is cut off before its END line, the
        # header and the base64 that follows it.
        Pattern(
            "PRIVATE_KEY",
            _compile(
                rf"-----BEGIN{_PEM_LABEL}(?:[\s\S]{{64,{_PEM_MAX}}}?-----END{_PEM_LABEL}"
                r"|(?:\\n|\\r|\s|[A-Za-z0-9+/=:,-])*)"
            ),
            window=_PEM_MAX + 300,
            anchors=(_PEM_BEGIN,),
            live=_pem_live,
            lookahead=_PEM_MAX + 300,  # the lazy search for its END line reads to the end of the text
        ),
    )


@functools.cache
def secrets_detector() -> PatternDetector:
    return PatternDetector(secret_patterns())
