"""`srdd ablate` (not yet built: issue 8/9)."""
from pretrain.stages import not_yet

main = not_yet("ablate", "issue 8/9")
