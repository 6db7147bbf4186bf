"""The Azure AI Foundry Models connector."""

from imgrag.connectors.foundry.client import FoundryEmbedder, normalize_endpoint

__all__ = ["FoundryEmbedder", "normalize_endpoint"]
