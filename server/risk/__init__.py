"""Risk assessment: questionnaires as data files, scoring and bands, the downgrade rule."""
