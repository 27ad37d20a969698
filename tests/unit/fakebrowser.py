"""A program that behaves like Chromium towards a second launch: the first copy of a profile
(--user-data-dir=DIR, else ~/.config/chromium) holds DIR/SingletonLock (-> HOST-PID) and
listens on DIR/SingletonSocket (a symlink to a socket in a short temporary directory, as
Chromium's); a later launch with the same profile hands its arguments over that socket and
exits. Every copy appends the arguments it serves to DIR/opened, with its pid."""

import os
import socket
import sys
import tempfile


def main(args: list[str]) -> int:
    chosen = [arg.split("=", 1)[1] for arg in args if arg.startswith("--user-data-dir=")]
    directory = chosen[0] if chosen else os.path.expanduser("~/.config/chromium")
    words = [arg for arg in args if not arg.startswith("--user-data-dir=")]
    link = os.path.join(directory, "SingletonSocket")
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(link)
            client.sendall("\0".join(words).encode())
        return 0  # handed off
    except OSError:
        pass
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(tempfile.mkdtemp(prefix=".fakebrowser-"), "SingletonSocket")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    os.symlink(path, link)
    os.symlink(f"{socket.gethostname()}-{os.getpid()}", os.path.join(directory, "SingletonLock"))
    record(directory, words)
    print("ready", flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            record(directory, connection.recv(65536).decode().split("\0"))


def record(directory: str, words: list[str]) -> None:
    with open(os.path.join(directory, "opened"), "a") as opened:
        opened.write(f"{os.getpid()} {' '.join(words)}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
