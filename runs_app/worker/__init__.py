"""What only the worker process (`manage.py worker`) runs: its loops and threads, the run
supervisor and a run's life in it (execution), schedules, daemons, warm-ups, retention,
notification delivery and the dependency audit. The web never imports these; the executors
(runs_app.executors) are driven from here."""
