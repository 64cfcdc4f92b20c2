"""πRL numerics: step rules, the chain sampler, heads and model adapters."""
