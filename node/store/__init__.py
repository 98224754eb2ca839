"""The database and the study lifecycle: tables, sessions, states and transitions, jobs, model versions."""
