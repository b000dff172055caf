"""What ae reads and writes: model files, atomic outputs, latents, tables, pictures."""
