"""Audio in: decoding (soundfile), the feature transforms (torchaudio), the DALI graphs."""
