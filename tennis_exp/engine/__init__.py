"""The training engine: hardware and scaling, DDP, the loop, its state and checkpoints."""
