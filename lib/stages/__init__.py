"""One module per notebook: each defines a Stage (lib.stages.base) that its notebook drives section by section."""
