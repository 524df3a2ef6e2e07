"""Parameter descriptors shared by the nodes (ranges, read-only flags, constraints text)."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


def descriptor(description: str, type_: int, read_only: bool = False,
               float_range: tuple[float, float] | None = None,
               int_range: tuple[int, int] | None = None,
               constraints: str = '') -> ParameterDescriptor:
    """A ParameterDescriptor whose range rclpy enforces on every set."""
    result = ParameterDescriptor(description=description, type=type_, read_only=read_only,
                                 additional_constraints=constraints)
    if float_range is not None:
        result.floating_point_range = [
            FloatingPointRange(from_value=float_range[0], to_value=float_range[1], step=0.0)]
    if int_range is not None:
        result.integer_range = [
            IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return result


def declare_all(node, table: dict, error: type[Exception]) -> dict:
    """Declare every `name: (default, descriptor)` of `table` on `node`; return the values.
    rclpy's own refusals (type, range) are re-raised as `error`, naming the parameter."""
    from rclpy.exceptions import ParameterException

    values = {}
    for name, (default, desc) in table.items():
        try:
            values[name] = node.declare_parameter(name, default, desc).value
        except ParameterException as exc:
            raise error(f"parameter {name!r}: {exc}") from exc
    return values
