"""Placeholder: the KannelSender lands with the provider work of the SMS issue."""

from __future__ import annotations

from gateway.providers.base import OutboundSms, SendResult
from gateway.settings import Settings


class KannelSender:
    name = "kannel"

    @classmethod
    def from_settings(cls, settings: Settings) -> KannelSender:
        raise NotImplementedError("KannelSender is not implemented yet")

    async def send(self, message: OutboundSms) -> SendResult:
        raise NotImplementedError

    async def close(self) -> None:
        return None
