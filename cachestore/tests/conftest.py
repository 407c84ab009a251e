"""The semantic cache's fake embeddings upstream and the gateway's routes to it."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from cachestore.tests.fake_embeddings import FakeEmbeddings

EMBED_UPSTREAM = "fake-embed-1"


@dataclass(frozen=True)
class Embedder:
    fake: FakeEmbeddings
    route: str  # an embeddings route to the fake (priced: its calls cost something)
    failing: str  # a route whose every call fails
    slow: str  # a route that answers after fake_embeddings.SLOW_SECONDS


@pytest.fixture(scope="session")
def embedding_routes(gateway_config: None, django_db_blocker: Any) -> Iterator[Embedder]:
    from billing.services import price_set
    from proxy.services import provider_upsert, route_upsert

    fake = FakeEmbeddings().start_in_thread()
    tag = uuid.uuid4().hex[:8]
    with django_db_blocker.unblock():
        provider, _ = provider_upsert(name=f"fake-embed-{tag}", kind="openai", base_url=fake.url, api_key="sk-embed")
        route_upsert(model=f"embed-{tag}", provider=provider, upstream_model=EMBED_UPSTREAM)
        route_upsert(model=f"embed-error-{tag}", provider=provider, upstream_model="fake-embed-error")
        route_upsert(model=f"embed-slow-{tag}", provider=provider, upstream_model="fake-embed-slow")
        price_set(model=EMBED_UPSTREAM, input_usd=Decimal("0.02"), output_usd=Decimal("0"))
    yield Embedder(fake, f"embed-{tag}", f"embed-error-{tag}", f"embed-slow-{tag}")
    fake.stop()
