"""GSM-7 and UCS-2, segments, transliteration, screen budgets."""
