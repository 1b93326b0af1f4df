"""Stock pyftpdlib FTPS, the floor censusdrop has to beat: one process,
one thread, ``TLS_FTPHandler`` with TLS required on control and data,
``DummyAuthorizer`` (plaintext password), the home folder as a real folder.

Run by ``bench/run.py``; the password comes on standard input::

    echo secret | python bench/peers/stock_pyftpdlib.py --port 21000 \\
        --passive 21001-21999 --cert bench.crt --key bench.key --home DIR

Changed from pyftpdlib's defaults: TLS required on both channels, TLS 1.2
at most (as every server in the benchmark), ``max_cons`` 2048 (its default
of 512 counts every socket and refuses 200 concurrent clients).
"""

from __future__ import annotations

import argparse
import sys

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import FTPServer

USER = "bench"
MAX_SOCKETS = 2048


class BenchHandler(TLS_FTPHandler):  # type: ignore[misc]
    """Options are class attributes, so they live on a subclass."""

    tls_control_required = True
    tls_data_required = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--passive", required=True, help="LOW-HIGH")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args()
    password = sys.stdin.readline().strip()

    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, password, args.home, perm="elradfmwMT")
    low, high = (int(part) for part in args.passive.split("-"))
    BenchHandler.authorizer = authorizer
    BenchHandler.certfile = args.cert
    BenchHandler.keyfile = args.key
    BenchHandler.passive_ports = list(range(low, high + 1))
    BenchHandler.get_ssl_context().set_max_proto_version(SSL.TLS1_2_VERSION)

    server = FTPServer(("127.0.0.1", args.port), BenchHandler)
    server.max_cons = MAX_SOCKETS
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close_all()


if __name__ == "__main__":
    main()
