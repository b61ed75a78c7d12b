"""convgen's ECG plugin: identify people by their heartbeat (WFDB and CSV records)."""
