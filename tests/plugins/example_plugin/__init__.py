"""A real third-party plugin, built, installed and loaded through its entry point."""
