"""Issue 14: ``sandbox up`` right after ``sandbox down`` is not refused by the closing connections."""

from __future__ import annotations

import socket

from service.sandbox.hapi import _port_in_use, free_port


def test_a_port_whose_server_just_closed_its_connections_is_free_to_start_on() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        assert _port_in_use(port)  # a listener is in use
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its side of the connection waits in TIME_WAIT
        client.close()
    # no listener now, only a connection in TIME_WAIT: a SO_REUSEADDR server (Tomcat) can bind
    assert not _port_in_use(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
