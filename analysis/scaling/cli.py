"""`srdd fit` (not yet built: issue 7/9)."""
from pretrain.stages import not_yet

main = not_yet("fit", "issue 7/9")
