"""Readers that map official checkpoints (WavTokenizer, encodec, vocos, DAC) onto our modules."""
