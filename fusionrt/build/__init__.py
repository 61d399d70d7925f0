"""fusionrt.build."""
