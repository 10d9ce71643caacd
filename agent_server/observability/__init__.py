"""What the server tells operators about itself: metrics and logs."""
