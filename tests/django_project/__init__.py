"""A real Django project (SQLite, ATOMIC_REQUESTS) whose views suspend; served by the CLI in a subprocess."""
