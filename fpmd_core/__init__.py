"""fpmd_core: Flow Policy Mirror Descent and its baselines, without ROS.

Data flows one way: `tasks` make environments, `agents` act and learn (with `policies`,
`replay`), `trainer` runs the loop and writes `checkpoint`s, `export` writes the one-step
policy to ONNX and `runtime` runs it.
"""

__version__ = "0.1.0"
