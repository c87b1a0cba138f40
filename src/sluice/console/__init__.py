"""The web console at /console: operators (admin key) and key holders (their sk- key)."""
