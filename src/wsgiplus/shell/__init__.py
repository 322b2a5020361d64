"""What runs the server: command line, settings, processes, logs, metrics."""
