"""`srdd distill` (not yet built: issue 5/9)."""
from pretrain.stages import not_yet

main = not_yet("distill", "issue 5/9")
