"""Error analysis: metrics, model comparison, sensitivity."""
