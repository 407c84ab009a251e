"""Well-known OpenAI-compatible providers: default base URL and the
environment variable that conventionally holds the credential."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    base_url: str
    api_key_env: str
    model_prefixes: tuple[str, ...] = ()  # bare model names this provider owns


PRESETS = (
    Preset("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", ("gpt-",)),
    # Anthropic's OpenAI SDK compatibility endpoint.
    Preset("anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY", ("claude-",)),
    Preset("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    Preset("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", ("deepseek-",)),
    Preset("gemini", "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY", ("gemini-",)),
    Preset("qwen", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "DASHSCOPE_API_KEY", ("qwen",)),
    Preset("glm", "https://open.bigmodel.cn/api/paas/v4", "ZHIPUAI_API_KEY", ("glm-",)),
    Preset("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    Preset("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    Preset("perplexity", "https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
)
