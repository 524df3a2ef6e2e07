"""``python -m fpmd_ros.sim``: run the mujoco_sim node (like the console script)."""

import sys

from fpmd_ros.sim_node import main

sys.exit(main())
