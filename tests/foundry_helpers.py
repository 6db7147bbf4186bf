"""Shared pieces for tests of the Foundry client: test images, a fake clock, a credential."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any

from imgrag.connectors.embedder import ImageInput
from PIL import Image


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    """A small real PNG of one colour with a stripe, so distinct colours give distinct vectors."""
    img = Image.new("RGB", size, color)
    for x in range(size[0] // 3):
        img.putpixel((x, size[1] // 2), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def images(n: int, text: str | None = None) -> list[ImageInput]:
    return [
        ImageInput(png(((37 * i) % 256, (91 * i) % 256, (13 * i) % 256)), text=text)
        for i in range(n)
    ]


@dataclass
class FakeTime:
    """An injectable monotonic clock, wall clock and sleep; sleeping advances time at once."""

    now: float = 1_000.0
    wall: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.wall += seconds
        await asyncio.sleep(0)


@dataclass
class AccessToken:
    token: str
    expires_on: int


class TokenIssuer:
    """A test credential in the shape of azure-identity's async credentials."""

    def __init__(self, time: FakeTime, lifetime: int = 3600) -> None:
        self.time = time
        self.lifetime = lifetime
        self.issued: list[str] = []
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.extend(scopes)
        token = f"entra-token-{len(self.issued) + 1}"
        self.issued.append(token)
        return AccessToken(token, int(self.time.wall) + self.lifetime)

    async def close(self) -> None:
        return None


class EmulatorIdentity:
    """A credential in azure-identity's async shape whose tokens the emulator issues for the
    scope asked, so the emulator can check the audience as Entra ID-protected endpoints do."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.state.issue_token(scopes[0]), 4_000_000_000)

    async def close(self) -> None:
        return None
