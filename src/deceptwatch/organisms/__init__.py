"""Model organisms: tiny transformers trained by the project, with a known truth."""
