"""Framework adapters: what Flask and Django need for views that suspend on futures."""
