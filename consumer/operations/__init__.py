"""Operator actions: pause, resume and force published as events, and the record of who did what."""
