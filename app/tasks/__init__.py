"""The tasks domain: routes and the schemas they take and give."""
