"""A local server that speaks the Azure AI Foundry Models embeddings REST API.

Used for offline development (``imgrag emulator``) and so tests exercise the production
client over real HTTP.
"""

from imgrag.connectors.emulator.app import create_app, model_info
from imgrag.connectors.emulator.options import API_KEY_ENV, DEFAULT_PORT, EmulatorOptions
from imgrag.connectors.emulator.server import EmulatorHandle, build_state, running_emulator, serve
from imgrag.connectors.emulator.state import EmulatorState, RequestRecord

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_PORT",
    "EmulatorHandle",
    "EmulatorOptions",
    "EmulatorState",
    "RequestRecord",
    "build_state",
    "create_app",
    "model_info",
    "running_emulator",
    "serve",
]
