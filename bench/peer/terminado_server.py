"""terminado, the terminal server behind Jupyter, as the benchmark's peer: one shell per WebSocket.

It runs in a virtualenv of its own (.venv-peer) and outside the repository's import path,
since terminado imports the standard-library ``pty`` that the project's ``pty/`` app shadows.
Usage: terminado_server.py PORT SHELL...
"""

import sys

import terminado
import tornado.ioloop
import tornado.web


def main() -> None:
    port, shell = int(sys.argv[1]), sys.argv[2:] or ["/bin/sh"]
    # UniqueTermManager: every WebSocket gets a new terminal, closed with it.
    manager = terminado.UniqueTermManager(shell_command=shell, max_terminals=5000)
    app = tornado.web.Application([(r"/websocket", terminado.TermSocket, {"term_manager": manager})])
    app.listen(port, address="127.0.0.1")
    print(f"terminado listening on 127.0.0.1:{port}", flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
