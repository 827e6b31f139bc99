"""medledger's node: the composition root (config, wiring, REST API, CLI)."""
