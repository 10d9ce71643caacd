"""What the server tells operators about itself: metrics (and, later, logs and health)."""
