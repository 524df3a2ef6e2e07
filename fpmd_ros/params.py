"""Parameter descriptors shared by the nodes (ranges, read-only flags, constraints text), and the
one place where a node declares its parameters and refuses the ones it does not have."""

from __future__ import annotations

import difflib

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

# Declared or read by rclpy itself on every node, so always allowed as overrides.
RCLPY_PARAMETERS = frozenset({'use_sim_time', 'start_type_description_service'})
RCLPY_PARAMETER_PREFIXES = ('qos_overrides.',)


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


def unknown_parameters_message(unknown: list[str], known: list[str], node_kind: str,
                               hint: str = '') -> str:
    """One line naming each unknown parameter and the closest known one (or the known ones)."""
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        part = f'parameter {name!r} is not a {node_kind} parameter'
        if close:
            part += f' (did you mean {close[0]!r}?)'
        elif not hint:
            part += f' (its parameters: {", ".join(known)})'
        parts.append(part)
    return '; '.join(parts + ([hint] if hint else []))


def declare_all(node, table: dict, error: type[Exception], node_kind: str,
                unknown_hint: str = '') -> dict:
    """Declare every `name: (default, descriptor)` of `table` on `node`; return the values.

    An override (``-p name:=value``, a params-file entry, ``parameter_overrides``) of a name
    that is neither in `table` nor rclpy's own raises `error` naming it and the closest
    parameter of `node_kind` (`unknown_hint`, if given, is appended: where those settings belong
    instead); rclpy alone would silently ignore it. rclpy's own refusals (type, range) are
    re-raised as `error`, naming the parameter."""
    from rclpy.exceptions import ParameterException

    # rclpy 9 has no public call that lists a node's overrides. The public route (build the node
    # with automatically_declare_parameters_from_overrides, then list_parameters) dies inside
    # Node.__init__, with a ValueError naming no parameter, on any empty-list override
    # (`-p joint_names:=[]`, which rcl types NOT_SET). So the node's own table of overrides is
    # read (the tests of unknown parameters fail loudly should rclpy ever rename it).
    overridden = node._parameter_overrides
    unknown = sorted(name for name in overridden
                     if name not in table and name not in RCLPY_PARAMETERS
                     and not name.startswith(RCLPY_PARAMETER_PREFIXES))
    if unknown:
        raise error(unknown_parameters_message(unknown, list(table), node_kind, unknown_hint))
    values = {}
    for name, (default, desc) in table.items():
        try:
            values[name] = node.declare_parameter(name, default, desc).value
        except ParameterException as exc:
            raise error(f"parameter {name!r}: {exc}") from exc
    return values
