"""One ``main`` for the package's nodes: start, spin until SIGINT/SIGTERM, stop cleanly, exit code.

Why not ``rclpy.init()`` + ``rclpy.spin()``: rclpy's signal handlers shut the context down at
once, so a node can no longer publish on its way out (the policy_controller must publish its
safe action last: a forward_command_controller would otherwise hold the last command forever).
And a Ctrl-C that arrives while the node's heavy modules (torch, MuJoCo, onnxruntime) are still
being imported raised KeyboardInterrupt out of the import: the process died of SIGINT (exit -2)
instead of stopping.

So :func:`run_node` installs its own SIGINT/SIGTERM handlers first (they only set a flag), then
imports and builds the node inside that protection (``make_node``), and spins until the flag is
set, waking at least every :data:`WAKE_PERIOD_S` to notice it. A stop at any moment - while
importing, while constructing, in any lifecycle state - exits 0. Keep this module light (no
rclpy, torch or MuJoCo import at module level): the console scripts import it before anything.

How a node uses it (the entry module stays light too; the heavy import happens in make_node)::

    def main(args=None) -> int:
        def make_node():
            from fpmd_ros.controller.node import PolicyController
            return PolicyController()
        return run_node(CONTROLLER_NODE_NAME, make_node, args=args, start=autostart)

A node whose main thread has work of its own (the trainer: training in the main thread, its
executor spinning in another) passes ``body(node, stop) -> exit code`` instead of being spun;
``body`` checks ``stop.is_set()`` (e.g. to write a checkpoint and stop at the next step), and
with ``second_signal_interrupts=True`` a second signal raises KeyboardInterrupt in the main
thread (stop at once), which run_node turns into ``interrupted_exit`` (e.g. the trainer's 130).
``on_first_signal(signum)`` runs when the first signal arrives, e.g. to tell the user at once
what the stop will do while ``body`` is still busy with a long step.

Exit codes (fpmd_ros.interface): 0 a requested stop; 2 (EXIT_INVALID_PARAMETERS) when
``make_node``, ``start`` or ``body`` raises :class:`InvalidParameterError` (a respawn cannot fix
it); an unexpected exception propagates (Python exits 1 with the traceback).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from fpmd_ros.interface import EXIT_INVALID_PARAMETERS, EXIT_OK

WAKE_PERIOD_S = 0.1  # longest time between a signal and the node noticing it


class InvalidParameterError(ValueError):
    """A node cannot start with its parameters (or its machine lacks what they need); the
    message names the parameter and what is expected. Exit code 2."""


class StopFlag:
    """Set by SIGINT/SIGTERM while installed. Only a flag: an exception raised from a signal
    handler can surface inside rclpy's C++ calls (taking a message) as a RuntimeError instead of
    KeyboardInterrupt."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, second_signal_interrupts: bool = False,
                 on_first_signal: Callable[[int], None] | None = None) -> None:
        self.event = threading.Event()
        self.count = 0  # signals received
        self.second_signal_interrupts = second_signal_interrupts
        self.on_first_signal = on_first_signal
        self._previous: dict = {}

    def __enter__(self) -> StopFlag:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        # Once stopping, later signals are ignored while the process winds down: a terminal
        # Ctrl-C under `ros2 launch` reaches a node twice (the terminal's SIGINT, then launch's),
        # and a second one during the interpreter's teardown (torch's is slow) killed it (-2).
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if self.count else handler)

    def _on_signal(self, signum, frame) -> None:
        self.count += 1
        self.event.set()
        if self.count == 1 and self.on_first_signal is not None:
            self.on_first_signal(signum)
        if self.second_signal_interrupts and self.count > 1:
            raise KeyboardInterrupt

    def is_set(self) -> bool:
        return self.event.is_set()


def run_node(name: str, make_node: Callable[[], object], args=None,
             start: Callable[[object], int | None] | None = None,
             body: Callable[[object, StopFlag], int] | None = None,
             second_signal_interrupts: bool = False, interrupted_exit: int = EXIT_OK,
             on_first_signal: Callable[[int], None] | None = None) -> int:
    """Run the node ``make_node()`` builds until SIGINT/SIGTERM; return the exit code.

    ``name`` is the logger used for fatal errors before the node exists. ``start(node)`` runs
    after construction, before spinning (e.g. the controller's autostart); it may return an exit
    code to stop at once. ``node.destroy_node()`` always runs on the way out, while the context is
    still valid, so a node can still publish there. ``body``, ``second_signal_interrupts``,
    ``interrupted_exit`` and ``on_first_signal``: see the module docstring."""
    with StopFlag(second_signal_interrupts, on_first_signal) as stop:
        # rclpy is imported here, under the flag: its import alone takes a noticeable time.
        import rclpy
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = None
        try:
            node = make_node()
            code = start(node) if start is not None and not stop.is_set() else None
            if code is not None:
                return code
            if body is not None:
                return body(node, stop)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while rclpy.ok() and not stop.is_set():
                executor.spin_once(timeout_sec=WAKE_PERIOD_S)
        except InvalidParameterError as error:
            rclpy.logging.get_logger(name).fatal(str(error))
            return EXIT_INVALID_PARAMETERS
        except KeyboardInterrupt:
            return interrupted_exit
        except ExternalShutdownException:
            pass
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return EXIT_OK
