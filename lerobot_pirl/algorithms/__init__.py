"""RL algorithms this package adds to LeRobot's ``RLAlgorithmConfig`` registry."""
