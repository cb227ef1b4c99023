"""`srdd eval` (not yet built: issue 6/9)."""
from pretrain.stages import not_yet

main = not_yet("eval", "issue 6/9")
