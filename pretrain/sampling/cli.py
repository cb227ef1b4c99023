"""`srdd sample` (not yet built: issue 5/9)."""
from pretrain.stages import not_yet

main = not_yet("sample", "issue 5/9")
