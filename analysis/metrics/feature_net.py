"""`srdd eval-net-train` (not yet built: issue 6/9)."""
from pretrain.stages import not_yet

main = not_yet("eval-net-train", "issue 6/9")
