"""`srdd sizes` (not yet built: issue 4/9)."""
from pretrain.stages import not_yet

main = not_yet("sizes", "issue 4/9")
