"""Strategies: how the seed set becomes training data (one class per strategy, one YAML in conf/strategy/)."""
