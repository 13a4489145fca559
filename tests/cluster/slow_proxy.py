#!/usr/bin/python3
"""A TCP proxy on loopback for node_test.sh's slow_handshake case: forwards
every connection to HOST:PORT both ways, but holds the server's first bytes
for DELAY seconds on the connections it accepts in its first STALL seconds
(a server that answers the BASP handshake late while it is busy). Prints
its port, then a line per accepted connection.
Usage: slow_proxy.py HOST:PORT DELAY STALL"""
import socket
import sys
import threading
import time


def pump(src, dst, delay):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if delay:
                time.sleep(delay)
                delay = 0
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    delay, stall = float(sys.argv[2]), float(sys.argv[3])
    start = time.monotonic()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    print(server.getsockname()[1], flush=True)
    count = 0
    while True:
        client, _ = server.accept()
        count += 1
        print(f"connection {count}", flush=True)
        upstream = socket.create_connection((host, int(port)))
        threading.Thread(target=pump, args=(client, upstream, 0), daemon=True).start()
        held = delay if time.monotonic() - start < stall else 0
        threading.Thread(target=pump, args=(upstream, client, held), daemon=True).start()


if __name__ == "__main__":
    main()
