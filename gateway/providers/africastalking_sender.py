"""Placeholder: the AfricasTalkingSender lands with the provider work of the SMS issue."""

from __future__ import annotations

from gateway.providers.base import OutboundSms, SendResult
from gateway.settings import Settings


class AfricasTalkingSender:
    name = "africastalking"

    @classmethod
    def from_settings(cls, settings: Settings) -> AfricasTalkingSender:
        raise NotImplementedError("AfricasTalkingSender is not implemented yet")

    async def send(self, message: OutboundSms) -> SendResult:
        raise NotImplementedError

    async def close(self) -> None:
        return None
