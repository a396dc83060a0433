#!/usr/bin/env python3
"""Relay for a node in its own network namespace: 127.0.0.1:PORT (inside) -> a Unix socket (outside).

    ip netns exec NS python3 relay.py PORT /path/to/proxy.sock

A namespace has its own loopback, so a node inside cannot reach the host's
Redis on 127.0.0.1; the file system is shared, so a Unix socket can. The
partition fault then takes the namespace's loopback down (``ip link set lo
down``): the node's packets to this relay are dropped by the kernel, open
connections hang until the client's timeout and new ones fail, while the
relay and everything outside the namespace keep running. Prints ``ready``
once it listens; stops with SIGTERM.
"""

import socket
import sys
import threading


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def serve(client: socket.socket, unix_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(unix_path)
    except OSError:
        client.close()
        upstream.close()
        return
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
    pump(client, upstream)


def main(argv) -> int:
    port, unix_path = int(argv[1]), argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print("ready", flush=True)
    while True:
        client, _addr = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(client, unix_path), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
