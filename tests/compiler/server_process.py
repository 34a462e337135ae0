"""Server side of test_client_server: run with ``python server_process.py DIR``.

It only reads bytes from DIR (server spec, evaluation keys, encrypted arguments) and writes
the encrypted result; it has no access to the function, the inputset or any secret.
"""

import pathlib
import sys

from fheml.compiler import Server


def main(directory):
    d = pathlib.Path(directory)
    server = Server.from_bytes((d / "server.spec").read_bytes())
    keys = server.load_keys((d / "evaluation.keys").read_bytes())
    result = server.run((d / "args.bin").read_bytes(), keys)
    (d / "result.bin").write_bytes(result.to_bytes())


if __name__ == "__main__":
    main(sys.argv[1])
