"""The training engine: hardware and scaling, DDP, the loop and its val/test evaluation, its
state (RNG included) and checkpoints."""
