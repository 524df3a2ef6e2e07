"""Parameter descriptors shared by the nodes (ranges, read-only flags, constraints text), and the
one place where a node declares its parameters and refuses the ones it does not have."""

from __future__ import annotations

import difflib

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

# rclpy ignores an override (``-p name:=value``, a params-file entry) of a parameter the node
# never declares, so a misspelt or retired name would silently change nothing. A node built with
# this option declares every override at construction; declare_all can then list them (public
# rclpy API) and refuse the unknown ones. Every node of the package passes it to its base class.
NODE_OPTIONS = {'automatically_declare_parameters_from_overrides': True}

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

    `node` must have been built with NODE_OPTIONS. An override of a name that is neither in
    `table` nor rclpy's own raises `error` naming it and the closest parameter of `node_kind`
    (`unknown_hint`, if given, is appended: where those settings belong instead). rclpy's own
    refusals (type, range) are re-raised as `error`, naming the parameter."""
    from rclpy.exceptions import ParameterException

    overridden = node.list_parameters([], 0).names  # depth 0: every name, dotted ones too
    unknown = sorted(name for name in overridden
                     if name not in table and name not in RCLPY_PARAMETERS
                     and not name.startswith(RCLPY_PARAMETER_PREFIXES))
    if unknown:
        raise error(unknown_parameters_message(unknown, list(table), node_kind, unknown_hint))
    values = {}
    for name, (default, desc) in table.items():
        if node.has_parameter(name):
            # Declared from its override without a descriptor: declared again with ours, which
            # takes the same override value and checks it against the type and range.
            node.undeclare_parameter(name)
        try:
            values[name] = node.declare_parameter(name, default, desc).value
        except ParameterException as exc:
            raise error(f"parameter {name!r}: {exc}") from exc
    return values
