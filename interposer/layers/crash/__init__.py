"""The crash-consistency journal: a layer and a config section of its own, apart from fault injection."""
