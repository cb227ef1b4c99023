"""`srdd tokenizer-train` (not yet built: issue 2/9)."""
from pretrain.stages import not_yet

main = not_yet("tokenizer-train", "issue 2/9")
