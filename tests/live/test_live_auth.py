"""With logins configured, the hands-free endpoints are behind them like the UI: a stranger who reaches the server
can neither start a conversation (which runs the models) nor read one by its id."""
from __future__ import annotations

import socket

import pytest
import requests


@pytest.fixture(scope="module")
def locked_app(system):
    import app as app_module

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app_module.launch(system, host="127.0.0.1", port=port, credentials={"alice": "s3cret"}, block=False)
    yield f"http://127.0.0.1:{port}"
    demo.close()


OFFER = {"sdp": "v=0\r\n", "type": "offer"}  # not a usable offer: the point is who may send one


def test_the_live_endpoints_need_a_login(locked_app):
    assert requests.post(f"{locked_app}/live/offer", json=OFFER, timeout=30).status_code == 401
    assert requests.get(f"{locked_app}/live/0123abcd/state", timeout=30).status_code == 401
    assert requests.post(f"{locked_app}/live/0123abcd/close", timeout=30).status_code == 401


def test_a_logged_in_page_reaches_them(locked_app):
    with requests.Session() as browser:
        assert browser.post(f"{locked_app}/login", data={"username": "alice", "password": "s3cret"},
                            timeout=30).ok
        assert browser.get(f"{locked_app}/live/0123abcd/state", timeout=30).status_code == 404  # no such one
        assert browser.post(f"{locked_app}/live/offer", json=OFFER, timeout=30).status_code != 401
