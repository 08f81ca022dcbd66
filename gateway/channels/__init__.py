"""Provider adapters: each translates one provider's HTTP into canonical events and
sends outbound SMS."""
