"""fusionrt.engines."""
