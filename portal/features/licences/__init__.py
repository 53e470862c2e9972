"""licences."""
