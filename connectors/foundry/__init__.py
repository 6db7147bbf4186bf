"""The Azure AI Foundry Models connector."""

from connectors.foundry.client import FoundryEmbedder, normalize_endpoint

__all__ = ["FoundryEmbedder", "normalize_endpoint"]
