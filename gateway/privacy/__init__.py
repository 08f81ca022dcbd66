"""Keys, the vault, pseudonyms and phone numbers."""
