"""Reliability drills (issue 9, point 8): kill and break things, count what was lost."""
