"""fusionrt: a face-swap inference runtime (detect → align → embed → swap → paste)."""

__version__ = "0.1.0"
