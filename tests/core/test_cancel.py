import threading

import pytest

from avatar.core.cancel import NEVER, CancelToken
from avatar.core.errors import AvatarError, Cancelled


def test_a_token_stops_work_in_another_thread_and_keeps_its_first_reason():
    token, steps = CancelToken(), []

    def work():
        while not token.wait(0.005):
            steps.append(1)

    t = threading.Thread(target=work)
    t.start()
    token.cancel("interrupted")
    token.cancel("stopped")
    t.join(timeout=5)
    assert not t.is_alive() and token.cancelled and token.is_set()
    with pytest.raises(Cancelled, match="interrupted") as info:
        token.check()
    assert isinstance(info.value, AvatarError)


def test_the_default_token_is_never_cancelled():
    NEVER.check()
    assert not NEVER.cancelled and not NEVER.wait(0)
