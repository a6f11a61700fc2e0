"""A trained model at work (the evaluate and predict commands): loaded from its checkpoint
(trained_model), scored on a split (split_report) or streamed over whole videos (pipeline)."""
