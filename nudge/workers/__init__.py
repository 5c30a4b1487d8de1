"""The worker process: every workflow and activity, polling the task queue."""
