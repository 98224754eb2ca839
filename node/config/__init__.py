"""Settings (one typed object) and what every entry point does first."""
