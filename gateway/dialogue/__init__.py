"""The pure dialogue engine, the validator that walks content with it, and the USSD
and SMS services around it."""
