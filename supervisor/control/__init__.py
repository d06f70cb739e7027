"""The control plane: a Unix socket speaking versioned JSON lines, and its client."""
