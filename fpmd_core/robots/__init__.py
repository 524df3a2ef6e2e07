"""Robot tasks from task files (`sim/<name>.yaml`): schema, model building, the env, metadata.

    from fpmd_core.tasks import make_env
    env = make_env("sim/arm_reach.yaml")          # [-1, 1] actions, float32 observations

The schema is in `schema` (one dataclass per section), the term library in `terms`, the model
edits (actuators, sites, floor, physics options) in `model`, the env in `env` and the deploy
metadata in `metadata`. No ROS here.
"""

from ..tasks import is_task_file
from .env import RobotEnv
from .metadata import robot_metadata
from .schema import RobotTask, TaskFileError, load_task

__all__ = ["RobotEnv", "RobotTask", "TaskFileError", "is_task_file", "load_task",
           "robot_metadata"]
