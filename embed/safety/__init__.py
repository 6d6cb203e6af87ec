"""What keeps production recoverable: backups, delayed deletion (retire, pins), evidence."""
