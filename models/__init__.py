"""Training sets, LightGBM next-best-offer and channel models, evaluation, the model registry."""
