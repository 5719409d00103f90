"""From raw data to an exported model: data, features, train, evaluate, registry, model card."""
