"""The Azure AI Foundry Models connector."""

from imgrag.connectors.foundry.client import FoundryEmbedder, normalize_endpoint
from imgrag.connectors.foundry.pool import FoundryPool

__all__ = ["FoundryEmbedder", "FoundryPool", "normalize_endpoint"]
