"""The runner's lifecycle driver against a real lifecycle node over real DDS: a transition whose
reply is lost neither stalls the start-up until the deadline nor hides a refusal."""

from __future__ import annotations

import threading
import time

import pytest
from lifecycle_msgs.msg import State, Transition
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.task import Future
from ros_helpers import fresh_name

from fpmd_ros.runner import TRANSITION_STATES, _LifecycleDriver

GRACE_S = 1.0
DEADLINE_S = 30.0


class CountingNode(LifecycleNode):
    """Accepts (or refuses) every configure and counts the requests it handled."""

    def __init__(self, name: str, context, accept: bool):
        super().__init__(name, context=context)
        self.accept = accept
        self.configures = 0

    def on_configure(self, state) -> TransitionCallbackReturn:
        self.configures += 1
        return TransitionCallbackReturn.SUCCESS if self.accept else TransitionCallbackReturn.FAILURE


class LosesFirst(_LifecycleDriver):
    """Loses the first change_state `message`, as Fast DDS does when one side of a service has
    not yet discovered the other: the 'request' is never sent, or it goes to the node and its
    'reply' is never looked at."""

    message = ''

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dropped = 0

    def _call(self, client, request):
        if self.dropped or not client.service_name.endswith('/change_state'):
            return super()._call(client, request)
        self.dropped += 1
        if self.message == 'reply':
            super()._call(client, request)
        return Future()


class LosesFirstReply(LosesFirst):
    message = 'reply'


class LosesFirstRequest(LosesFirst):
    message = 'request'


class LosesFirstRequestAndStateReply(LosesFirstRequest):
    """Also loses the reply of the first ``get_state`` asked after that request."""

    def _call(self, client, request):
        if self.dropped == 1 and client.service_name.endswith('/get_state'):
            self.dropped += 1
            _LifecycleDriver._call(self, client, request)  # sent; its reply is not looked at
            return Future()
        return super()._call(client, request)


@pytest.fixture
def lifecycle_node(ros_context, ros_executor):
    def make(accept: bool) -> CountingNode:
        node = CountingNode(fresh_name('counting'), ros_context, accept)
        ros_executor.add_node(node)
        return node

    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ros_executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    yield make
    stop.set()
    spinner.join(timeout=5)


@pytest.fixture
def make_driver():
    drivers = []

    def make(kind=_LifecycleDriver) -> tuple[_LifecycleDriver, list[str]]:
        logged: list[str] = []
        driver = kind(reply_grace_s=GRACE_S, log=logged.append)
        drivers.append(driver)
        return driver, logged

    yield make
    for driver in drivers:
        driver.close()


def configure(driver, node) -> tuple[str | None, float]:
    """The driver's configure of `node`, once the two have discovered each other (the tests
    lose messages on purpose; DDS must not lose others)."""
    from lifecycle_msgs.srv import ChangeState

    name = node.get_fully_qualified_name()
    driver._client(ChangeState, f'{name}/change_state')
    deadline = time.monotonic() + DEADLINE_S
    while driver._state_id(name, deadline, lambda: None) is None:
        assert time.monotonic() < deadline, f'{name} not discovered'
        driver.executor.spin_once(timeout_sec=0.1)
    started = time.monotonic()
    reason = driver.change_state(node.get_fully_qualified_name(),
                                 Transition.TRANSITION_CONFIGURE, 'configure',
                                 time.monotonic() + DEADLINE_S, lambda: None)
    return reason, time.monotonic() - started


def test_transition_states_are_lifecycle_msgs_ids():
    assert TRANSITION_STATES == {
        Transition.TRANSITION_CONFIGURE: (State.PRIMARY_STATE_UNCONFIGURED,
                                          State.PRIMARY_STATE_INACTIVE),
        Transition.TRANSITION_ACTIVATE: (State.PRIMARY_STATE_INACTIVE,
                                         State.PRIMARY_STATE_ACTIVE)}


@pytest.mark.parametrize('accept', [True, False])
def test_answered_transition_is_asked_once(lifecycle_node, make_driver, accept):
    node = lifecycle_node(accept)
    driver, logged = make_driver()
    reason, _ = configure(driver, node)
    assert reason == (None if accept else
                      f'configure refused by {node.get_fully_qualified_name()} (see its log)')
    assert node.configures == 1 and not logged


def test_lost_reply_of_a_done_transition_counts_as_done(lifecycle_node, make_driver):
    node = lifecycle_node(accept=True)
    driver, logged = make_driver(LosesFirstReply)
    reason, took = configure(driver, node)
    assert reason is None
    assert driver.dropped == 1 and node.configures == 1  # not configured twice
    assert took < DEADLINE_S / 2
    assert 'is in the state it leads to' in logged[0]


def test_lost_reply_of_a_refusal_is_asked_again_and_reported(lifecycle_node, make_driver):
    node = lifecycle_node(accept=False)
    driver, logged = make_driver(LosesFirstReply)
    reason, took = configure(driver, node)
    assert reason == f'configure refused by {node.get_fully_qualified_name()} (see its log)'
    assert node.configures == 2 and took < DEADLINE_S / 2
    assert 'asking once more' in logged[0]


def test_lost_request_is_asked_again(lifecycle_node, make_driver):
    node = lifecycle_node(accept=True)
    driver, logged = make_driver(LosesFirstRequest)
    reason, took = configure(driver, node)
    assert reason is None
    assert node.configures == 1 and took < DEADLINE_S / 2
    assert 'asking once more' in logged[0]


def test_unanswered_state_query_is_asked_again_not_waited_out(lifecycle_node, make_driver):
    node = lifecycle_node(accept=True)
    driver, logged = make_driver(LosesFirstRequestAndStateReply)
    reason, took = configure(driver, node)
    assert reason is None
    assert driver.dropped == 2 and node.configures == 1 and took < DEADLINE_S / 2
    assert 'asking once more' in logged[0]
