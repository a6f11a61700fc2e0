"""tennis-exp: Hydra experiments for the tennis 4-event CNN-LSTM, tracked in MLflow."""
