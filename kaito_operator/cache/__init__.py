"""Reads from the watches the operators already hold; writes through the API.

The role controller-runtime's informer cache plays for Go controllers: `WatchCache` (store.py)
holds the latest copy of each object of the cached kinds, `register_cache` (feed.py) feeds it
from the operator's kopf watches, and `CachedClient` (client.py) answers reads from it and
sends writes to the API, storing their answers.
"""

from kaito_operator.cache.client import CachedClient, Client
from kaito_operator.cache.feed import register_cache
from kaito_operator.cache.store import WatchCache

__all__ = ["CachedClient", "Client", "WatchCache", "register_cache"]
