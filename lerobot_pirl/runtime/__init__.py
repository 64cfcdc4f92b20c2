"""Actor/learner runtime pieces shared by ``lerobot_pirl.actor`` and ``lerobot_pirl.learner``."""
