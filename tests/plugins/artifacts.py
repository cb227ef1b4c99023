"""Session fixtures for data artifacts (filled by the data pipeline / tokenizer areas)."""
