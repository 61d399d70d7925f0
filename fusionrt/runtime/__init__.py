"""Below the engines: the engine cache (fingerprints, atomic entries), the home folder, and
machine facts (versions, GPU, CPU) used by doctor, bench and cache keys."""
