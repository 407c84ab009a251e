"""OpenAI embeddings: never streamed, never translated (a provider serves it or not), cached."""

from proxy import dialects
from proxy.apis.spec import DialectSpec
from proxy.dialects import Dialect

EMBEDDINGS = DialectSpec(
    Dialect.EMBEDDINGS,
    ("/v1/embeddings",),
    lambda raw, headers, query: dialects.embeddings_call(raw),
    cacheable=True,
)
