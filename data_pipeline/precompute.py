"""`srdd pyramids` (not yet built: issue 3/9)."""
from pretrain.stages import not_yet

main = not_yet("pyramids", "issue 3/9")
