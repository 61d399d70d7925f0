"""fusionrt.bench."""
