"""Session fixtures for tokenizer artifacts (filled by the tokenizer area)."""
