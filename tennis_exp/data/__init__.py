"""Data: frame folders to windows (split_index, frame_cache, frames) and the batches a run reads
(loaders); videos, preparing them, splits and segment files; the synthetic twins' lifecycle."""
