"""fusionrt.serve."""
