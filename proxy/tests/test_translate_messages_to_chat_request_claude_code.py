"""A whole Claude Code request as chat completions (proxy.translate.messages_to_chat.request)."""

import hashlib

from proxy.tests.test_translate_messages_to_chat_request import LONG_USER_ID
from proxy.translate.messages_to_chat.request import messages_request_to_chat

CLAUDE_CODE_TOOLS = [
    {
        "name": name,
        "description": f"{name} tool",
        "input_schema": {
            "type": "object",
            "properties": {"arg": {"type": "string"}},
            "required": ["arg"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }
    for name in (
        "Task",
        "Bash",
        "Glob",
        "Grep",
        "LS",
        "ExitPlanMode",
        "Read",
        "Edit",
        "MultiEdit",
        "Write",
        "NotebookEdit",
        "WebFetch",
        "TodoWrite",
        "WebSearch",
        "BashOutput",
    )
]
CLAUDE_CODE_BODY = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "You are an interactive CLI tool...", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Context</system-reminder>"},
                {"type": "text", "text": "fix the failing test", "cache_control": {"type": "ephemeral"}},
            ],
        }
    ],
    "tools": CLAUDE_CODE_TOOLS,
    "metadata": {"user_id": LONG_USER_ID},
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "temperature": 1,
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
}


def test_a_claude_code_request_translates_whole() -> None:
    translated = messages_request_to_chat(CLAUDE_CODE_BODY, upstream_model="deepseek-chat")
    assert translated.body == {
        "model": "deepseek-chat",
        "messages": [
            {
                "role": "system",
                "content": "You are Claude Code, Anthropic's official CLI for Claude.\n\n"
                "You are an interactive CLI tool...",
            },
            {"role": "user", "content": "<system-reminder>Context</system-reminder>\n\nfix the failing test"},
        ],
        "max_tokens": 32000,
        "temperature": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": hashlib.sha256(LONG_USER_ID.encode()).hexdigest(),
        "tools": [
            {
                "type": "function",
                "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
            }
            for t in CLAUDE_CODE_TOOLS
        ],
        "reasoning_effort": "high",
    }
    assert translated.notes == [
        "dropped: cache_control",
        "mapped: metadata.user_id -> user (sha256)",
        "mapped: thinking -> reasoning_effort=high",
        "dropped: context_management",
        "dropped: output_config",
    ]
