"""Build the configured provider's sender."""

from __future__ import annotations

from gateway.providers.base import Sender
from gateway.providers.fake import FakeSender
from gateway.settings import ProviderName, Settings


def make_sender(settings: Settings) -> Sender:
    if settings.provider is ProviderName.africastalking:
        from gateway.app import StartupError
        from gateway.providers.africastalking_sender import AfricasTalkingSender

        try:
            return AfricasTalkingSender.from_settings(settings)
        except ValueError as exc:  # a missing key or a malformed URL: say which, and stop
            raise StartupError(str(exc)) from None
    if settings.provider is ProviderName.kannel:
        from gateway.app import StartupError
        from gateway.providers.kannel import KannelConfigError, KannelSender

        try:
            return KannelSender.from_settings(settings)
        except KannelConfigError as exc:
            raise StartupError(str(exc)) from None
    return FakeSender(url=settings.fake_smsc_url)
