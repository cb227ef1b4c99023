"""`srdd edit` (not yet built: issue 5/9)."""
from pretrain.stages import not_yet

main = not_yet("edit", "issue 5/9")
