"""Pages that gather several capabilities: the customer dashboard and the staff home."""
