"""Policies this package adds to LeRobot: the small ``flow_mlp`` and the πRL wrapper ``pi_rl``."""
