"""fusionrt.models."""
