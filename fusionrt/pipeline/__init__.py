"""fusionrt.pipeline."""
