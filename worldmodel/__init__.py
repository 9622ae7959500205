"""World model: pure JAX model, config, checkpoint and error types."""
