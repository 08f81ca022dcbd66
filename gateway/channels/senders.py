"""Build the configured provider's sender."""

from __future__ import annotations

from gateway.channels.base import Sender, send_slots
from gateway.channels.fake import FakeSender
from gateway.errors import StartupError
from gateway.settings import ProviderName, Settings


def make_sender(settings: Settings) -> Sender:
    """The configured provider's sender; a provider missing its settings (a key, a URL)
    is a ``StartupError`` naming them."""
    try:
        if settings.provider is ProviderName.africastalking:
            from gateway.channels.africastalking_sender import AfricasTalkingSender

            return AfricasTalkingSender.from_settings(settings)
        if settings.provider is ProviderName.kannel:
            from gateway.channels.kannel import KannelSender

            return KannelSender.from_settings(settings)
    except ValueError as exc:  # KannelConfigError included
        raise StartupError(str(exc)) from None
    return FakeSender(url=settings.fake_smsc_url, timeout=settings.send_timeout,
                      connections=send_slots(settings.send_rate, settings.send_timeout))
