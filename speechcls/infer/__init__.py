"""Using a trained model: predict (export and listen will join it)."""
