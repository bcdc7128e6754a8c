"""Model architectures, output adapters, normalisation wrapper and safe checkpoint I/O."""
