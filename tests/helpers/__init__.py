"""The test kit: helpers every test file shares, written once."""
