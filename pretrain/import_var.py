"""`srdd import-var` (not yet built: issue 2/9)."""
from pretrain.stages import not_yet

main = not_yet("import-var", "issue 2/9")
