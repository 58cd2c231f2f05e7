"""Run npm's solcjs as if it were the native ``solc`` for py-solc-x.

solcjs prints ``>>> Cannot retry compilation with SMT ...`` lines on stdout
before its JSON, and knows no ``--allow-paths``, and cuts long output when stdout is a pipe;
this shim mends all three so that
py-solc-x can parse the answer. Usage: ``python -m ledger.chain._solcjs_shim
SOLCJS [solc arguments...]``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile


def main(argv: list[str]) -> int:
    solcjs, args = argv[0], argv[1:]
    kept: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if arg == "--allow-paths":
            skip_next = True
            continue
        kept.append(arg)
    # solcjs exits before a pipe drains and cuts its output near 64 KiB: use a file.
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run(
            ["node", solcjs, *kept], input=sys.stdin.buffer.read(), stdout=out, check=False
        )
        out.seek(0)
        for line in out:
            if not line.startswith(b">>>"):
                sys.stdout.buffer.write(line)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
