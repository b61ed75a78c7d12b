"""convgen's audio plugin: recordings, spectrogram representations, speaker recipes, audio style transfer."""
