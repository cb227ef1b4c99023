"""`srdd policy-train` (not yet built: issue 5/9)."""
from pretrain.stages import not_yet

main = not_yet("policy-train", "issue 5/9")
