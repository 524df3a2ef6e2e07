"""``python -m fpmd_ros.controller``: run the policy_controller node (like the console script)."""

import sys

from fpmd_ros.controller_node import main

sys.exit(main())
