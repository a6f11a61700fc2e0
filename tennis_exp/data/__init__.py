"""Data: frame folders to windows (frames), the synthetic twins."""
