"""One webhook attempt (notifications.post) against loopback receivers that misbehave."""
import socket
import threading
import time

from mschedule.master.notifications import post


def _receiver(answer) -> tuple[str, socket.socket]:
    """A server of one connection: ``answer(conn)`` once the request arrived."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            try:
                answer(conn)
            except OSError:
                pass
    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/hook", server


def _trickle(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(40):  # a byte every 0.2 s: each read is quick, the answer never ends in time
        time.sleep(0.2)
        conn.sendall(b"a")
    conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")


def test_the_timeout_bounds_the_whole_attempt_not_each_read():
    url, server = _receiver(_trickle)
    with server:
        begun = time.monotonic()
        status, error = post(url, b"{}", {}, timeout=1)
        assert time.monotonic() - begun < 2.5
    assert status is None and error.startswith("TimeoutError"), (status, error)


def test_a_quick_answer_is_delivered():
    url, server = _receiver(lambda conn: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n"))
    with server:
        assert post(url, b"{}", {}, timeout=5) == (204, None)


def test_a_name_lookup_that_hangs_is_bounded_by_the_attempts_deadline(monkeypatch):
    """A lookup is one blocking call no socket timeout bounds (a resolver's retries take up to half a minute):
    it must not hold the attempt, and its thread, past the deadline."""
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if host == "slow.example":
            time.sleep(4)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    begun = time.monotonic()
    status, error = post("http://slow.example:9/hook", b"{}", {}, timeout=1)
    assert time.monotonic() - begun < 2.5, "the attempt waited for the name's lookup past its deadline"
    # the lookup's own wait and the attempt's deadline end together: either may say so
    assert status is None and ("lookup of slow.example took longer" in error
                               or error == "TimeoutError: no complete answer within 1s"), error


def test_a_name_is_looked_up_and_every_address_tried():
    url, server = _receiver(lambda conn: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n"))
    with server:
        assert post(url.replace("127.0.0.1", "localhost"), b"{}", {}, timeout=5) == (204, None)
