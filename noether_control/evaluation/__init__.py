"""World-model evaluation: per-frame metrics, LPIPS, reference predictors, the evaluate command."""
