"""fusionrt.builders."""
