"""The JSON API, one blueprint per area."""
