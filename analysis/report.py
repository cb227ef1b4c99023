"""`srdd report` (not yet built: issue 7/9)."""
from pretrain.stages import not_yet

main = not_yet("report", "issue 7/9")
