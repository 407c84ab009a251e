"""Provider kinds: the wire protocol each speaks, its default base URL and
the environment variable that conventionally holds its credential.

A provider's `kind` is one of these names. The protocol picks the adapter
(how URLs and credentials are formed, which usage convention applies); the
optional dialects say which client APIs the provider serves natively, so
that those pass through instead of being translated to chat completions.
"""

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

OPENAI, ANTHROPIC, AZURE = "openai", "anthropic", "azure"


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    protocol: str  # openai, anthropic or azure
    base_url: str  # "" when every deployment has its own (Azure, vLLM)
    api_key_env: str
    model_prefixes: tuple[str, ...] = ()  # bare model names this provider owns
    responses: bool = False  # serves /responses natively
    completions: bool = False  # serves the legacy /completions
    # The path a bare host (https://api.example.com) gets; None: the default
    # base URL's path. The client SDKs of some kinds add a version segment
    # themselves (ANTHROPIC_BASE_URL has no /v1): `version` is added to any
    # base URL that does not end with it.
    root_path: str | None = None
    version: str = ""


PRESETS = (
    Preset(
        "openai",
        "OpenAI",
        OPENAI,
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        ("gpt-", "o1", "o3", "o4-"),
        responses=True,
        completions=True,
    ),
    Preset(
        "anthropic",
        "Anthropic",
        ANTHROPIC,
        "https://api.anthropic.com/v1",
        "ANTHROPIC_API_KEY",
        ("claude-",),
        version="/v1",
    ),
    # base URL: https://<resource>.openai.azure.com/openai, optionally ?api-version=...
    Preset("azure", "Azure OpenAI", AZURE, "", "AZURE_OPENAI_API_KEY", completions=True, root_path="/openai"),
    Preset("openrouter", "OpenRouter", OPENAI, "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", completions=True),
    Preset("deepseek", "DeepSeek", OPENAI, "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", ("deepseek-",)),
    Preset(
        "qwen",
        "Qwen (DashScope compatible mode)",
        OPENAI,
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        "DASHSCOPE_API_KEY",
        ("qwen",),
    ),
    Preset("glm", "GLM (BigModel)", OPENAI, "https://open.bigmodel.cn/api/paas/v4", "ZHIPUAI_API_KEY", ("glm-",)),
    Preset(
        "gemini",
        "Gemini (OpenAI-compatible endpoint)",
        OPENAI,
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "GEMINI_API_KEY",
        ("gemini-",),
    ),
    Preset("ollama", "Ollama", OPENAI, "http://127.0.0.1:11434/v1", "", completions=True),  # OLLAMA_HOST + /v1
    Preset("perplexity", "Perplexity", OPENAI, "https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
    Preset("mistral", "Mistral", OPENAI, "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    Preset("groq", "Groq", OPENAI, "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    # vLLM, llama.cpp, LM Studio, TGI...: the base URL is the server's /v1.
    Preset("openai-compatible", "Any OpenAI-compatible server", OPENAI, "", "", completions=True, root_path="/v1"),
)

PRESETS_BY_NAME = {preset.name: preset for preset in PRESETS}
KIND_CHOICES = [(preset.name, preset.label) for preset in PRESETS]


def preset_for(kind: str) -> Preset:
    """The preset of a provider kind; unknown kinds speak plain OpenAI."""
    return PRESETS_BY_NAME.get(kind) or PRESETS_BY_NAME["openai-compatible"]


def base_url_normalize(kind: str, url: str) -> str:
    """The base URL the adapters append their paths to (.../v1 for most),
    from either form the ecosystem writes: the versioned one (OPENAI_BASE_URL,
    https://api.openai.com/v1) or the bare host (ANTHROPIC_BASE_URL and the
    Anthropic SDK, an Ollama or vLLM host). Any other path is kept as given.

    Raises ValueError, saying what is expected, for anything but an http(s) URL.
    """
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    if not _is_http_url(parts) or any(c.isspace() for c in text):
        raise ValueError(f"base URL {url!r} is not an http(s) URL; give one such as https://api.openai.com/v1")
    preset = preset_for(kind)
    path = parts.path.rstrip("/")
    if not path:
        path = preset.root_path if preset.root_path is not None else urlsplit(preset.base_url).path.rstrip("/")
    if preset.version and not path.endswith(preset.version):
        path += preset.version
    return parts._replace(scheme=parts.scheme.lower(), path=path, fragment="").geturl()


def _is_http_url(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number in range)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
