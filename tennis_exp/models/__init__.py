"""Models: the users' CNN-LSTM."""
