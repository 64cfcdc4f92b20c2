"""Env configs this package registers with LeRobot's ``EnvConfig`` registry."""
